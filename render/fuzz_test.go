package render

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"
)

// FuzzLoad feeds arbitrary bytes to the loader as one manifest file. Seeds
// live in testdata/fuzz/FuzzLoad. Whatever the input, Load must return,
// without panicking, and every diagnostic must name the file.
//
//	go test ./render -run '^$' -fuzz FuzzLoad -fuzztime 60s
func FuzzLoad(f *testing.F) {
	f.Add([]byte(aliasBomb))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: busybox}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Load(context.Background(), fstest.MapFS{"f.yaml": {Data: data}}, Options{MaxNodes: 1 << 16})
		if err != nil {
			t.Fatalf("Load returned an error for file content: %v", err)
		}
		for _, diag := range d.Diagnostics {
			if !strings.HasPrefix(diag.String(), "f.yaml") {
				t.Fatalf("diagnostic without the file: %s", diag)
			}
		}
		for _, o := range d.Objects {
			if o.Pos.File != "f.yaml" {
				t.Fatalf("object without its file: %+v", o.Pos)
			}
		}
	})
}
