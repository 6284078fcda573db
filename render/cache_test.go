package render

import (
	"context"
	"testing"
	"testing/fstest"
)

func TestCacheReusesUnchangedFiles(t *testing.T) {
	cm := func(name string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n")}
	}
	c := NewCache()
	ctx := context.Background()
	a, err := Load(ctx, fstest.MapFS{"same.yaml": cm("same"), "changed.yaml": cm("one")}, Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(ctx, fstest.MapFS{"same.yaml": cm("same"), "changed.yaml": cm("two")}, Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	same := Key{Kind: "ConfigMap", Namespace: "default", Name: "same"}
	if a.Get(same) != b.Get(same) {
		t.Errorf("unchanged file was decoded again")
	}
	if b.Get(Key{Kind: "ConfigMap", Namespace: "default", Name: "two"}) == nil {
		t.Errorf("changed file was not decoded again")
	}
	uncached, _ := Load(ctx, fstest.MapFS{"same.yaml": cm("same")}, Options{})
	if uncached.Get(same) == a.Get(same) {
		t.Errorf("a load without a cache shared objects")
	}
}
