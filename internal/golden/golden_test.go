package golden

import "testing"

func TestDiff(t *testing.T) {
	got := Diff("a\nb\nc", "a\nc\nd")
	if got != "- b\n+ d\n" {
		t.Errorf("Diff = %q", got)
	}
	if Diff("same", "same") != "" {
		t.Error("equal texts differ")
	}
}
