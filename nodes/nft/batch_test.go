package nft

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestBatchErrorNamesTheMessage: a batch the kernel refuses changes
// nothing, and the error says which message failed.
func TestBatchErrorNamesTheMessage(t *testing.T) {
	ns := newNetns(t, "batch")
	s := ns.syncer(t)
	b := newBatch("berth-test", nil)
	b.addTable()
	if err := b.addSet(&Set{Name: "ok", Key: []SetType{TypeIPv4Addr}}); err != nil {
		t.Fatal(err)
	}
	b.elements("ok", []Element{ipKey(addr("198.18.0.1"))}, false)
	b.elements("missing", []Element{ipKey(addr("198.18.0.1"))}, false)
	err := s.send(b)
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "add elements to missing") {
		t.Fatalf("send: %v, want ENOENT naming the element message", err)
	}
	if out := ns.nft(t, "list", "tables"); strings.Contains(out, "berth-test") {
		t.Errorf("a refused batch left a table:\n%s", out)
	}
	// The connection was replaced and works.
	b = newBatch("berth-test", nil)
	b.addTable()
	if err := s.send(b); err != nil {
		t.Fatal(err)
	}
	if out := ns.nft(t, "list", "tables"); !strings.Contains(out, "berth-test") {
		t.Errorf("no table after a good batch:\n%s", out)
	}
}
