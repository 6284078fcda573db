package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/nodes/api"
)

// socketDir returns a short temporary directory: a socket's path must fit
// in 108 bytes.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-httpapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestListenUnixPermissions(t *testing.T) {
	path := filepath.Join(socketDir(t), "run", "berth", "agent.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || int(st.Uid) != os.Getuid() {
		t.Errorf("socket mode %v, owner %d", fi.Mode(), st.Uid)
	}
	for _, dir := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("made %s with mode %v (%v)", dir, fi.Mode(), err)
		}
	}
	if _, err := os.Lstat(path + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary socket left behind: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("close leaves the socket: %v", err)
	}
}

// A socket left by an agent that died is replaced.
func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); string(b) != "hi" {
		t.Errorf("read %q from the new socket", b)
	}
}

func TestListenUnixRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")

	// Another agent of ours: the lock says so.
	first, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second agent: %v, want ErrSocketInUse", err)
	}
	first.Close()

	// Something else answers on it, without the lock.
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := ListenUnix(path); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("live socket: %v, want ErrSocketInUse", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}
}

func TestListenUnixRefusesOtherFiles(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("the file was replaced")
	}
}

// blockingBackend's event stream never ends by itself.
type blockingBackend struct {
	fakeBackend
	started chan struct{}
}

func (b *blockingBackend) Events(ctx context.Context, _ time.Time, _ bool) (<-chan api.Event, error) {
	ch := make(chan api.Event)
	close(b.started)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch, nil
}

// Shutting down ends followed streams, stops accepting and removes the
// socket, promptly.
func TestServeShutsDownGracefully(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	b := &blockingBackend{started: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, l, NewHandler(b, Options{})) }()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := client.Get("http://agent/v1/events?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-b.started

	start := time.Now()
	cancel()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("the stream should end cleanly: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
	if _, err := client.Get("http://agent/v1/pods"); err == nil {
		t.Errorf("still answering after shutdown")
	}
}

// A path with no room for the temporary name is bound in place, 0600 all
// the same.
func TestListenUnixLongPath(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, strings.Repeat("s", maxSocketPath-len(dir)-1))
	if len(path) != maxSocketPath {
		t.Fatalf("path of %d bytes", len(path))
	}
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%v %v", fi.Mode(), err)
	}
}
