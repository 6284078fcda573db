package testenv

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// NamedNetns creates the named network namespace name (in /run/netns,
// so ip netns exec and nft -n... see it) without leaving the calling
// goroutine in it, and deletes it when the test ends. The caller closes
// nothing.
func NamedNetns(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("current netns: %v", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to the test's netns: %v", err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return h
}
