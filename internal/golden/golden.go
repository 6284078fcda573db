// Package golden compares test output with files under a package's
// testdata, and rewrites them when the test runs with its -update flag.
// Test helpers only.
package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Check compares got with testdata/name; with update it writes got there
// instead.
func Check(t testing.TB, name, got string, update bool) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", path, Diff(string(want), got))
	}
}

// Diff lists the lines only in want (-) and only in got (+), in their
// order, at most 40 of them.
func Diff(want, got string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var b strings.Builder
	shown := 0
	for _, side := range []struct {
		lines, mark string
		other       map[string]int
	}{{want, "- ", g}, {got, "+ ", w}} {
		for _, l := range strings.Split(side.lines, "\n") {
			if side.other[l] == 0 && shown < 40 {
				b.WriteString(side.mark + l + "\n")
				shown++
			}
		}
	}
	return b.String()
}
