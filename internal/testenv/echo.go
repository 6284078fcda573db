package testenv

import (
	"context"
	"os"
	"testing"

	"berth.dev/berth/examples/images"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// EchoVersions are the versions of the echo image that EchoRegistry serves.
var EchoVersions = []string{"1", "2"}

// EchoImage returns the echo image of version, built once per test process
// (package images caches the compiled binary and the busybox layer).
func EchoImage(t testing.TB, version string) v1.Image {
	t.Helper()
	Require(t, "go")
	if _, err := os.Stat(images.BusyboxPath); err != nil {
		unavailable(t, "test needs %s (Debian package busybox-static)", images.BusyboxPath)
	}
	img, err := images.BuildEcho(context.Background(), version)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// EchoRegistry starts a registry holding berth/echo:1 and berth/echo:2
// (r.Ref("berth/echo:1"), or images.EchoRef(r.Host(), "1")).
func EchoRegistry(t testing.TB) *RegistryDaemon {
	t.Helper()
	imgs := make([]v1.Image, len(EchoVersions))
	for i, v := range EchoVersions {
		imgs[i] = EchoImage(t, v)
	}
	r := Registry(t)
	for i, v := range EchoVersions {
		if err := images.Push(context.Background(), imgs[i], images.EchoRef(r.Host(), v), true); err != nil {
			t.Fatal(err)
		}
	}
	return r
}
