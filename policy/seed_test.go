package policy_test

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"

	"berth.dev/berth/policy"
	"berth.dev/berth/render"
)

// TestSeed evaluates the example repository built from the seed guide.
// Its Namespace production enforces the restricted level, and Deployment
// web-app (section 3.1) sets no securityContext, so Kubernetes would
// refuse its pods, and so must berth.
func TestSeed(t *testing.T) {
	const dir = "../examples/seed"
	d, err := render.Load(context.Background(), os.DirFS(dir), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := policy.Evaluate(d)
	if !policy.Denied(got) {
		t.Error("the seed is admitted; Deployment production/web-app must be denied")
	}
	var webApp []policy.Violation
	for _, v := range got {
		if v.Rule == policy.RulePodSecurity && v.Object.String() == "Deployment production/web-app" {
			webApp = append(webApp, v)
		}
	}
	if len(webApp) != 1 {
		t.Fatalf("got %d pod-security violations for Deployment production/web-app, want 1: %v", len(webApp), webApp)
	}
	v := webApp[0]
	if v.Action != "deny" {
		t.Errorf("action %s, want deny", v.Action)
	}
	if !strings.HasPrefix(v.Message, `would violate PodSecurity "restricted:latest": `) {
		t.Errorf("message %q does not say what Kubernetes says", v.Message)
	}
	for _, s := range []string{"allowPrivilegeEscalation", "capabilities", "runAsNonRoot", "seccompProfile", "pod-security.kubernetes.io/enforce"} {
		if !strings.Contains(v.Message, s) {
			t.Errorf("message does not name %s: %s", s, v.Message)
		}
	}
	if v.Field != "spec.template.spec" || v.Pos.File != "3.1-deployment-web-app.yaml" || v.Pos.Line == 0 {
		t.Errorf("violation at %s %s, want the pod spec of 3.1-deployment-web-app.yaml", v.Pos, v.Field)
	}

	// Nothing else is denied: the other pods run in privileged namespaces,
	// and the checklist warns by default.
	for _, v := range got {
		if v.Action == "deny" && v.Object.String() != "Deployment production/web-app" {
			t.Errorf("unexpected denial: %s", v.Diagnostic())
		}
	}
	// Section 7.3 is the checklist itself: it must pass every rule.
	for _, v := range got {
		if v.Object.Name == "checklist-app" {
			t.Errorf("the checklist example breaks the checklist: %s", v.Diagnostic())
		}
	}
	// Evaluation is deterministic and leaves the objects alone.
	if again := policy.Evaluate(d); !reflect.DeepEqual(got, again) {
		t.Error("a second evaluation differs from the first")
	}
}
