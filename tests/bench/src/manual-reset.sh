#!/usr/bin/env bash
# Resetting guests by hand, the way it is done without the operator: one token, then for each
# guest a read of the user, the mail PATCH, the invitation POST, and a kubectl patch that
# records the outcome on the resource's status.
#
# Environment: BASE (Graph and authority URL), CA (CA file to trust), TENANT, CLIENT_ID,
# CLIENT_SECRET, KUBECTL, KUBECONFIG, NAMESPACE, TARGETS (file of "name user-id email" lines).
set -euo pipefail

for var in BASE CA TENANT CLIENT_ID CLIENT_SECRET KUBECTL KUBECONFIG NAMESPACE TARGETS; do
  [[ -n ${!var:-} ]] || { echo "manual-reset.sh: $var is not set" >&2; exit 2; }
done

graph() { curl -sS -f --noproxy '*' --cacert "$CA" "$@"; }

token=$(graph \
  --data-urlencode grant_type=client_credentials \
  --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "client_secret=$CLIENT_SECRET" \
  --data-urlencode "scope=$BASE/.default" \
  "$BASE/$TENANT/oauth2/v2.0/token" | jq -er .access_token)
auth="Authorization: Bearer $token"

while read -r name id email; do
  user=$(graph -H "$auth" "$BASE/v1.0/users/$id?\$select=id,userType,userPrincipalName,mail")
  if [[ $(jq -r .userType <<<"$user") != Guest ]]; then
    echo "manual-reset.sh: $id is not a guest" >&2
    exit 1
  fi
  graph -H "$auth" -X PATCH -H 'Content-Type: application/json' \
    -d "{\"mail\": \"$email\"}" "$BASE/v1.0/users/$id" >/dev/null
  invitation=$(graph -H "$auth" -X POST -H 'Content-Type: application/json' \
    -d "{\"invitedUserEmailAddress\": \"$email\", \"inviteRedirectUrl\": \"https://myapps.microsoft.com\",
         \"sendInvitationMessage\": true, \"resetRedemption\": true, \"invitedUser\": {\"id\": \"$id\"}}" \
    "$BASE/v1.0/invitations")
  invitation_id=$(jq -er .id <<<"$invitation")
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  "$KUBECTL" -n "$NAMESPACE" patch guestredemptionreset "$name" --subresource=status --type=merge -p "{
    \"status\": {
      \"observedGeneration\": 1, \"phase\": \"Succeeded\",
      \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\", \"reason\": \"Issued\",
        \"message\": \"reset by hand; invitation $invitation_id\", \"observedGeneration\": 1,
        \"lastTransitionTime\": \"$now\"}],
      \"invitation\": {\"id\": \"$invitation_id\", \"email\": \"$email\", \"issuedAt\": \"$now\", \"generation\": 1}
    }}" >/dev/null
done <"$TARGETS"
