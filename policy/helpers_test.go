package policy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"berth.dev/berth/policy"
	"berth.dev/berth/render"
)

// load renders a repository made of files (name to YAML) and fails the
// test if render finds errors in it: a test repository must be valid, or
// it tests render instead of policy.
func load(t testing.TB, files map[string]string) *render.Desired {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Diagnostics.HasErrors() {
		t.Fatalf("test repository does not load cleanly:\n%v", d.Diagnostics.Err())
	}
	return d
}

// evaluate loads files and evaluates them.
func evaluate(t testing.TB, files map[string]string) []policy.Violation {
	t.Helper()
	return policy.Evaluate(load(t, files))
}

// want describes one expected violation. Message must be contained in the
// violation's message; Pos, when set, must equal its "file:line:col".
type want struct {
	rule, action, object, field, pos string
	message                          []string
}

func (w want) matches(v policy.Violation) bool {
	if v.Rule != w.rule || string(v.Action) != w.action || v.Field != w.field {
		return false
	}
	if w.object != "" && v.Object.String() != w.object {
		return false
	}
	if w.pos != "" && v.Pos.String() != w.pos {
		return false
	}
	for _, m := range w.message {
		if !strings.Contains(v.Message, m) {
			return false
		}
	}
	return true
}

func (w want) String() string {
	return fmt.Sprintf("%s %s %s %s %s %q", w.action, w.rule, w.object, w.field, w.pos, w.message)
}

// check asserts that got holds exactly one match for each of ws, and
// nothing else.
func check(t *testing.T, got []policy.Violation, ws []want) {
	t.Helper()
	used := make([]bool, len(got))
	for _, w := range ws {
		found := false
		for i, v := range got {
			if !used[i] && w.matches(v) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing violation %s", w)
		}
	}
	for i, v := range got {
		if !used[i] {
			t.Errorf("unexpected violation: %s", v.Diagnostic())
		}
	}
}

// only keeps the violations of one rule.
func only(vs []policy.Violation, rule string) []policy.Violation {
	var out []policy.Violation
	for _, v := range vs {
		if v.Rule == rule {
			out = append(out, v)
		}
	}
	return out
}

// checklistOff is a Cluster that turns every checklist rule off, so that
// Pod Security tests see only Pod Security violations.
var checklistOff = func() string {
	var b strings.Builder
	b.WriteString("apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: test\nspec:\n  policy:\n    checklist:\n")
	for _, r := range policy.ChecklistRules() {
		fmt.Fprintf(&b, "      %s: off\n", r)
	}
	return b.String()
}()

// indent indents every line of s by n spaces.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// fleet is a repository of n workloads in 20 namespaces: a third
// enforcing restricted, a third enforcing baseline and warning restricted,
// a third without labels. With loose, every other workload breaks the
// restricted level and most checklist rules with two containers (17
// violations each); otherwise every workload is hardened and passes.
func fleet(objects int, loose bool) map[string]string {
	const (
		namespaces = 20
		perFile    = 100
	)
	files := map[string]string{}
	var ns strings.Builder
	for i := range namespaces {
		fmt.Fprintf(&ns, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns%d\n", i)
		switch i % 3 {
		case 0:
			ns.WriteString("  labels:\n    pod-security.kubernetes.io/enforce: restricted\n")
		case 1:
			ns.WriteString("  labels:\n    pod-security.kubernetes.io/enforce: baseline\n    pod-security.kubernetes.io/warn: restricted\n")
		}
		fmt.Fprintf(&ns, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: ns%d}\n", i)
	}
	files["namespaces.yaml"] = ns.String()
	hardened := strings.SplitN(goodDeployment, "---", 2)[0]
	hardened = strings.Replace(hardened, "    spec:\n      serviceAccountName: app\n",
		"    spec:\n      serviceAccountName: app\n      securityContext:\n        seccompProfile: {type: RuntimeDefault}\n", 1)
	bad := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n        - name: app\n          image: app:v1\n        - name: sidecar\n          image: sidecar:v1\n"
	for f := range objects / perFile {
		var b strings.Builder
		for j := range perFile {
			i := f*perFile + j
			doc := hardened
			if loose && i%2 == 1 {
				doc = bad
			}
			doc = strings.Replace(doc, "  name: app\n", fmt.Sprintf("  name: app%d\n  namespace: ns%d\n", i, i%namespaces), 1)
			b.WriteString("---\n")
			b.WriteString(doc)
		}
		files[fmt.Sprintf("apps/%03d.yaml", f)] = b.String()
	}
	return files
}
