package netns

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"berth.dev/berth/internal/testenv"
)

func TestNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	base := filepath.Join(t.TempDir(), "netns")
	start := time.Now()
	path, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: create netns with loopback up: %v", time.Since(start))
	t.Cleanup(func() { Remove(path) })
	if filepath.Dir(path) != base {
		t.Errorf("namespace at %s, want under %s", path, base)
	}
	if ok, err := Exists(path); !ok || err != nil {
		t.Fatalf("Exists = %v, %v", ok, err)
	}
	if up, err := LoopbackUp(path); !up || err != nil {
		t.Fatalf("loopback up = %v, %v", up, err)
	}

	// A server inside the namespace is reached through Dial, and not from
	// the host's loopback.
	var ln net.Listener
	if err := Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "inside")
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := Dial(ctx, path, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "inside" {
		t.Errorf("read %q through the namespace", b)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		// The same port may be taken on the host by chance; then it is not
		// our server.
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) == "inside" {
			t.Error("the namespace's server answered on the host's loopback")
		}
	}
	if _, err := Dial(ctx, path, "tcp", "localhost:80"); err == nil {
		t.Error("Dial accepted a host name")
	}

	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("namespace file left after Remove: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if ok, err := Exists(path); ok || err != nil {
		t.Errorf("Exists after Remove = %v, %v", ok, err)
	}

	// A file without a namespace on it (as after a reboot) does not exist.
	stale := filepath.Join(base, "stale")
	os.WriteFile(stale, nil, 0o644)
	if ok, err := Exists(stale); ok || err != nil {
		t.Errorf("Exists(stale file) = %v, %v", ok, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale file not removed")
	}
}
