-- Argo CD health of a guestreset.io GuestRedemptionReset (and any kind of the group that
-- follows the same conditions). It reads the controller's kstatus conditions, so Argo CD and
-- Flux agree:
--   Stalled=True             Degraded    a failure that needs a person (NotAGuest, EmailInUse,
--                                        OutcomeUnknown, Denied, Forbidden, ...)
--   AwaitingApproval         Suspended   waits for a second person (kubectl guestreset approve)
--   Reconciling=True         Progressing working, queued for a write slot, or a tenant pause
--   Ready=True               Healthy     issued, or the dry run planned
-- A status about an older generation than the spec's is Progressing: the controller has not
-- seen the edit yet.
local health = {status = "Progressing", message = "Waiting for the controller to report"}
if obj.status == nil or obj.status.conditions == nil then
  return health
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  health.message = "Waiting for the controller to observe generation " .. obj.metadata.generation
  return health
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local ready = conditions["Ready"]
local stalled = conditions["Stalled"]
local reconciling = conditions["Reconciling"]
local function said(condition)
  local message = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    message = message .. ": " .. condition.message
  end
  return message
end
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = said(stalled)}
end
if ready ~= nil and ready.reason == "AwaitingApproval" then
  return {status = "Suspended", message = said(ready)}
end
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = said(reconciling)}
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = said(ready)}
end
if ready ~= nil then
  health.message = said(ready)
end
return health
