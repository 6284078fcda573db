package reconciler

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"testing/fstest"

	"berth.dev/berth/render"
)

func TestResolveMachines(t *testing.T) {
	fsys := fstest.MapFS{"machines.yaml": {Data: []byte(`apiVersion: berth.dev/v1alpha1
kind: Machine
metadata:
  name: named
spec:
  address: localhost
---
apiVersion: berth.dev/v1alpha1
kind: Machine
metadata:
  name: numbered
spec:
  address: 198.18.0.11
`)}}
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil || d.Diagnostics.HasErrors() {
		t.Fatalf("load: %v %v", err, d.Diagnostics)
	}
	got := ResolveMachines(context.Background(), d)
	if _, ok := got["numbered"]; ok || len(got) != 1 {
		t.Errorf("resolved %v; want only the machine with a name", got)
	}
	if !slices.Contains(got["named"], netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("localhost resolved to %v", got["named"])
	}
}
