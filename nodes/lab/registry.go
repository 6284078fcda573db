package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// RegistryBinary is Debian's docker-registry (distribution 2.8).
var RegistryBinary = "docker-registry"

// registryConfigTemplate serves plain HTTP on the bridge address without
// authentication (Debian's packaged configuration asks for htpasswd).
const registryConfigTemplate = `# The lab registry, written by berth lab up.
version: 0.1
log:
  level: info
  formatter: text
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
  secret: berth-lab
health:
  storagedriver:
    enabled: false
`

func registryConfigPath(l *Lab) string { return filepath.Join(l.RegistryDir, "config.yml") }

// registry writes the registry's configuration and starts it in the host
// namespace.
func (u *upper) registry(ctx context.Context) error {
	bin, err := lookPath(RegistryBinary)
	if err != nil {
		return fmt.Errorf("registry: %w (Debian package docker-registry)", err)
	}
	l := u.lab
	if err := os.MkdirAll(filepath.Join(l.RegistryDir, "data"), 0o755); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	cfg := fmt.Sprintf(registryConfigTemplate, filepath.Join(l.RegistryDir, "data"), l.Registry)
	if err := os.WriteFile(registryConfigPath(l), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	d, err := u.start("registry", "", filepath.Join(l.RegistryDir, "registry.log"), bin, "serve", registryConfigPath(l))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := registryAnswers(wctx, l.Registry)
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return d.failure()
		case <-wctx.Done():
			return fmt.Errorf("registry at %s not answering: %w (last: %v)", l.Registry, wctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// registryClient talks to the lab registry directly, whatever proxy the
// environment names: it is on the host's own bridge.
var registryClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// registryAnswers checks that the registry at host serves the v2 API.
func registryAnswers(ctx context.Context, host string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := registryClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}
