package runtime

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render/api/v1alpha1"
)

// registryHosts is the machine's registry configuration, compiled: how to
// reach each configured host, and the mirrors to try first.
type registryHosts struct {
	hosts map[string]*hostConfig // by host[:port] as in references
}

type hostConfig struct {
	host    string
	scheme  string
	client  *http.Client
	mirrors []string // host[:port] or URL, in order
}

// newRegistryHosts checks the configuration and loads its CA files.
func newRegistryHosts(regs []v1alpha1.Registry) (*registryHosts, error) {
	rh := &registryHosts{hosts: map[string]*hostConfig{}}
	for _, reg := range regs {
		host := normalizeRegistryHost(reg.Host)
		if host == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("registry %q: not a host[:port]", reg.Host)
		}
		if _, dup := rh.hosts[host]; dup {
			return nil, fmt.Errorf("registry %q configured twice", reg.Host)
		}
		hc := &hostConfig{host: host, scheme: "https", mirrors: reg.Mirrors}
		if reg.PlainHTTP {
			hc.scheme = "http"
		}
		var tlsConfig *tls.Config
		if reg.CAFile != "" {
			pem, err := os.ReadFile(reg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("registry %s: CA file: %w", reg.Host, err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry %s: CA file %s holds no PEM certificate", reg.Host, reg.CAFile)
			}
			tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		hc.client = &http.Client{Transport: docker.DefaultHTTPTransport(tlsConfig)}
		rh.hosts[host] = hc
	}
	for _, hc := range rh.hosts {
		for _, m := range hc.mirrors {
			if host, _, _ := rh.endpoint(m); host == "" || strings.ContainsAny(host, " ") {
				return nil, fmt.Errorf("registry %s: mirror %q is not a host[:port] or URL", hc.host, m)
			}
		}
	}
	return rh, nil
}

var defaultClient = &http.Client{Transport: docker.DefaultHTTPTransport(nil)}

// endpoint resolves a mirror ("host[:port]", "http://host:port" or
// "https://host") to its host, scheme and client: a scheme given wins; else
// a registry entry for the mirror's host says; else HTTPS.
func (rh *registryHosts) endpoint(mirror string) (host, scheme string, c *http.Client) {
	scheme = ""
	host = mirror
	if u, err := url.Parse(mirror); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		scheme, host = u.Scheme, u.Host
	}
	host = normalizeRegistryHost(host)
	c = defaultClient
	if hc, ok := rh.hosts[host]; ok {
		c = hc.client
		if scheme == "" {
			scheme = hc.scheme
		}
	}
	if scheme == "" {
		scheme = "https"
	}
	return host, scheme, c
}

// resolver returns a resolver for one pull, authenticating with the
// credentials in auth (docker config JSON documents).
func (rh *registryHosts) resolver(auth []api.Sensitive) (remotes.Resolver, error) {
	creds, err := parseDockerConfigs(auth)
	if err != nil {
		return nil, err
	}
	authorizer := docker.NewDockerAuthorizer(docker.WithAuthCreds(creds.lookup))
	hosts := func(refHost string) ([]docker.RegistryHost, error) {
		refHost = normalizeRegistryHost(refHost)
		var out []docker.RegistryHost
		add := func(host, scheme string, c *http.Client, caps docker.HostCapabilities) {
			if host == "docker.io" {
				host = "registry-1.docker.io"
			}
			out = append(out, docker.RegistryHost{
				Client:       c,
				Authorizer:   authorizer,
				Host:         host,
				Scheme:       scheme,
				Path:         "/v2",
				Capabilities: caps,
			})
		}
		hc, ok := rh.hosts[refHost]
		if ok {
			for _, m := range hc.mirrors {
				host, scheme, c := rh.endpoint(m)
				add(host, scheme, c, docker.HostCapabilityPull|docker.HostCapabilityResolve)
			}
			add(refHost, hc.scheme, hc.client, docker.HostCapabilityPull|docker.HostCapabilityResolve|docker.HostCapabilityPush)
		} else {
			add(refHost, "https", defaultClient, docker.HostCapabilityPull|docker.HostCapabilityResolve|docker.HostCapabilityPush)
		}
		return out, nil
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts}), nil
}

// normalizeRegistryHost turns the names Docker Hub goes by into
// "docker.io", and drops a scheme and path.
func normalizeRegistryHost(h string) string {
	h = strings.TrimSpace(h)
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	h = strings.ToLower(h)
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// credentials are registry credentials by host.
type credentials map[string]credential

type credential struct{ user, secret string }

func (c credentials) lookup(host string) (string, string, error) {
	cr := c[normalizeRegistryHost(host)]
	return cr.user, cr.secret, nil
}

// parseDockerConfigs reads docker config JSON documents: {"auths": {host:
// {"auth": base64(user:password)} or {"username", "password"} or
// {"identitytoken"}}}, or the legacy .dockercfg map without "auths". The
// first document naming a host wins. Errors never quote the documents.
func parseDockerConfigs(docs []api.Sensitive) (credentials, error) {
	type entry struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	}
	out := credentials{}
	for i, doc := range docs {
		var withAuths struct {
			Auths map[string]entry `json:"auths"`
		}
		if err := json.Unmarshal(doc, &withAuths); err != nil {
			return nil, fmt.Errorf("image pull secret %d: not docker config JSON", i)
		}
		entries := withAuths.Auths
		if entries == nil {
			if err := json.Unmarshal(doc, &entries); err != nil {
				return nil, fmt.Errorf("image pull secret %d: not docker config JSON", i)
			}
		}
		for key, e := range entries {
			host := normalizeRegistryHost(key)
			if _, seen := out[host]; seen || host == "" {
				continue
			}
			var c credential
			switch {
			case e.IdentityToken != "":
				c = credential{"", e.IdentityToken}
			case e.Auth != "":
				b, err := base64.StdEncoding.DecodeString(e.Auth)
				if err != nil {
					return nil, fmt.Errorf("image pull secret %d: auth for %s is not base64", i, host)
				}
				user, pass, ok := strings.Cut(string(b), ":")
				if !ok {
					return nil, fmt.Errorf("image pull secret %d: auth for %s is not user:password", i, host)
				}
				c = credential{user, pass}
			case e.Username != "":
				c = credential{e.Username, e.Password}
			default:
				continue
			}
			out[host] = c
		}
	}
	return out, nil
}
