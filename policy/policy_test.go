package policy_test

import (
	"cmp"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"berth.dev/berth/policy"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

func TestDiagnostic(t *testing.T) {
	v := policy.Violation{
		Rule: "imageDigest", Action: v1alpha1.ActionWarn,
		Object: render.Key{Kind: "Pod", Namespace: "default", Name: "p"},
		Pos:    render.Pos{File: "p.yaml", Line: 8, Column: 7},
		Field:  "spec.containers[0].image", Message: "not pinned",
	}
	if got, want := v.Diagnostic().String(), "p.yaml:8:7: warning: Pod default/p: spec.containers[0].image: imageDigest: not pinned"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	v.Action = v1alpha1.ActionDeny
	if got := v.Diagnostic().Severity; got != render.SeverityError {
		t.Errorf("deny is a %s, want an error", got)
	}
	if policy.Denied([]policy.Violation{{Action: v1alpha1.ActionWarn}}) || !policy.Denied([]policy.Violation{{Action: v1alpha1.ActionWarn}, v}) {
		t.Error("Denied is wrong")
	}
	if ds := policy.Diagnostics([]policy.Violation{v}); len(ds) != 1 || !ds.HasErrors() {
		t.Errorf("Diagnostics = %v", ds)
	}
}

// TestOrder checks that violations come sorted by file, line and rule
// whatever the order of the documents.
func TestOrder(t *testing.T) {
	got := evaluate(t, map[string]string{
		"b.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers:\n    - {name: c, image: c}\n",
		"a.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n    - {name: c, image: c}\n    - {name: d, image: d}\n",
	})
	if len(got) == 0 {
		t.Fatal("no violations")
	}
	sorted := slices.IsSortedFunc(got, func(a, b policy.Violation) int {
		return cmp.Or(cmp.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Rule, b.Rule))
	})
	if !sorted {
		for _, v := range got {
			t.Log(v.Diagnostic())
		}
		t.Error("violations are not sorted by file, line and rule")
	}
}

// TestEmpty checks a repository without workloads, and a Desired built
// by hand with no Cluster.
func TestEmpty(t *testing.T) {
	if got := policy.Evaluate(&render.Desired{}); len(got) != 0 {
		t.Errorf("got %v", got)
	}
	if got := evaluate(t, map[string]string{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"}); len(got) != 0 {
		t.Errorf("got %v", got)
	}
}

// TestParallel checks that a repository large enough to be checked in
// parallel gets the same answer as with one goroutine.
func TestParallel(t *testing.T) {
	d := load(t, fleet(1100, true))
	got := policy.Evaluate(d)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if want := policy.Evaluate(d); !reflect.DeepEqual(got, want) {
		t.Errorf("parallel evaluation differs: %d violations, %d alone", len(got), len(want))
	}
	if len(got) == 0 {
		t.Error("no violations")
	}
}
