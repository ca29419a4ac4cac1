// gitops-check reads Kubernetes objects and says what two GitOps tools would make of each:
// kstatus (the library behind `flux` waits, kpt and cli-utils' apply) and an Argo CD
// resource health script run the way Argo CD runs one (gopher-lua, Lua 5.1, with only the
// package, base and table libraries open and `obj` set to the object).
//
//	gitops-check HEALTH_LUA < objects.json
//
// The input is one JSON object or a List (`kubectl get -o json`); the output is one JSON
// line per object: {"name", "kstatus", "kstatusMessage", "argo", "argoMessage"}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name           string `json:"name"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

// The statuses Argo CD accepts from a health script; anything else is Unknown.
var argoStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gitops-check HEALTH_LUA < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	check(err)
	input, err := io.ReadAll(os.Stdin)
	check(err)
	// apimachinery's decoder, as a client's: whole numbers become int64, as kstatus expects.
	var doc map[string]any
	check(kjson.Unmarshal(input, &doc))
	objects := []map[string]any{doc}
	if items, ok := doc["items"].([]any); ok {
		objects = objects[:0]
		for _, item := range items {
			objects = append(objects, item.(map[string]any))
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, object := range objects {
		check(out.Encode(judge(&unstructured.Unstructured{Object: object}, string(script))))
	}
}

func judge(obj *unstructured.Unstructured, script string) verdict {
	v := verdict{Name: obj.GetName()}
	result, err := status.Compute(obj)
	if err != nil {
		v.Kstatus, v.KstatusMessage = "Error", err.Error()
	} else {
		v.Kstatus, v.KstatusMessage = result.Status.String(), result.Message
	}
	v.Argo, v.ArgoMessage = argoHealth(obj.Object, script)
	return v
}

// argoHealth runs the script as Argo CD's Lua VM does: a fresh state without the standard
// libraries but package, base and table, a one-second deadline, the object as `obj`, and the
// returned table's status and message.
func argoHealth(object map[string]any, script string) (string, string) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		check(l.CallByParam(lua.P{Fn: l.NewFunction(open), NRet: 0, Protect: true}, lua.LString(name)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(script); err != nil {
		return "Error", err.Error()
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "Error", fmt.Sprintf("the script returned %s, not a table", l.Get(-1).Type())
	}
	health := lua.LVAsString(table.RawGetString("status"))
	if !argoStatuses[health] {
		return "Unknown", "Lua returned an invalid health status"
	}
	return health, lua.LVAsString(table.RawGetString("message"))
}

// toLua turns decoded JSON into Lua values: objects into tables keyed by name, arrays into
// tables indexed from 1.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", value))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
}
