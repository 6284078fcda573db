package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RegistryBinary is Debian's docker-registry (distribution 2.8).
var RegistryBinary = "docker-registry"

// RegistryDaemon is a docker-registry serving plain HTTP on a loopback port,
// without authentication, storing in a temporary directory.
type RegistryDaemon struct {
	addr string
	d    *daemon
}

// Addr is the registry's host:port, as it appears in image references.
func (r *RegistryDaemon) Addr() string { return r.addr }

// Host is the registry host of image references ("127.0.0.1:PORT"); the
// same as Addr.
func (r *RegistryDaemon) Host() string { return r.addr }

// URL is the registry's base URL ("http://127.0.0.1:PORT").
func (r *RegistryDaemon) URL() string { return "http://" + r.addr }

// Ref returns the reference of repoTag ("berth/echo:1") on this registry.
func (r *RegistryDaemon) Ref(repoTag string) string { return r.addr + "/" + repoTag }

const registryConfig = `version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: berth-test
health:
  storagedriver:
    enabled: false
`

// Registry starts a registry for the test and stops it when the test ends,
// printing its log if the test failed.
func Registry(t testing.TB) *RegistryDaemon {
	t.Helper()
	Require(t, RegistryBinary)
	bin, _ := lookPath(RegistryBinary)
	dir := t.TempDir()
	// A free port can be taken between choosing and binding it: retry.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		r, err := startRegistry(t, bin, dir, attempt)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("start registry: %v", lastErr)
	return nil
}

func startRegistry(t testing.TB, bin, dir string, attempt int) (*RegistryDaemon, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, data, addr), 0o644); err != nil {
		return nil, err
	}
	d, err := startDaemon("registry", filepath.Join(dir, "registry.log"), os.Environ(), bin, "serve", cfg)
	if err != nil {
		return nil, err
	}
	r := &RegistryDaemon{addr: addr, d: d}
	if err := waitHTTP(r.URL()+"/v2/", d, 30*time.Second); err != nil {
		d.stop(5 * time.Second)
		if strings.Contains(d.logTail(4096), "address already in use") {
			return nil, err
		}
		t.Fatalf("start registry: %v\nregistry log:\n%s", err, d.logTail(16<<10))
	}
	t.Cleanup(func() {
		d.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("registry log (%s):\n%s", d.logPath, d.logTail(32<<10))
		}
	})
	return r, nil
}

// waitHTTP polls url until it answers 200, d exits, or timeout passes.
func waitHTTP(url string, d *daemon, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited: %v", d.name, d.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s not answering after %v: %w", d.name, timeout, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server that a test starts (and must be told its port).
func FreePort(t testing.TB) int {
	t.Helper()
	addr, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	return p
}
