package ingress

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"

	"berth.dev/berth/nodes/api"
)

// Path types of the Ingress specification.
const (
	PathTypeExact                  = "Exact"
	PathTypePrefix                 = "Prefix"
	PathTypeImplementationSpecific = "ImplementationSpecific"
)

// Warning is something in an api.Ingress that the proxy serves otherwise
// than written: a rule that lost a conflict, a path or host it cannot
// serve, a certificate it cannot use. Warnings never hold secret data.
type Warning struct {
	// Source is the "namespace/name" of the Ingress (or of the TLS
	// Secret) the warning is about; "" for the merged Ingress as a whole
	// (its ports).
	Source  string
	Message string
}

func (w Warning) String() string {
	if w.Source == "" {
		return w.Message
	}
	return w.Source + ": " + w.Message
}

// routes is the compiled routing of one api.Ingress: immutable once built,
// read by any number of requests at once.
type routes struct {
	exact    map[string]*hostRoutes // by lowercase host
	wildcard map[string]*hostRoutes // "*.example.com" by "example.com"
	any      *hostRoutes            // hostless rules; nil when none
	def      *backend               // DefaultBackend; nil for 404
}

// hostRoutes are the paths of one host.
type hostRoutes struct {
	exact  map[string]*route // by path as written
	prefix map[string]*route // by path without its trailing slash ("" for "/")
}

// route is one path of one rule.
type route struct {
	source   string
	pathType string // Exact or Prefix (ImplementationSpecific as Prefix)
	path     string
	backend  *backend
}

// compileRoutes turns the rules of in into routes, taking backends from
// newBackend (which lets the caller share endpoint state across tables).
// Rules are taken in order of Source (stable, so one Ingress's own order
// is kept); of two rules for the same host, path type and path, the first
// wins and the other is reported.
func compileRoutes(in *api.Ingress, newBackend func(api.IngressBackend) *backend) (*routes, []Warning) {
	rt := &routes{exact: map[string]*hostRoutes{}, wildcard: map[string]*hostRoutes{}}
	if in == nil {
		return rt, nil
	}
	var warns []Warning
	rules := slices.Clone(in.Rules)
	slices.SortStableFunc(rules, func(a, b api.IngressRule) int { return cmp.Compare(a.Source, b.Source) })
	for _, rule := range rules {
		host, err := normalizeRuleHost(rule.Host)
		if err != nil {
			warns = append(warns, Warning{rule.Source, err.Error()})
			continue
		}
		hr := rt.hostRoutes(host)
		for _, p := range rule.Paths {
			r, err := compilePath(rule.Source, p)
			if err != nil {
				warns = append(warns, Warning{rule.Source, fmt.Sprintf("host %q: %v", displayHost(host), err)})
				continue
			}
			table, key := hr.prefix, strings.TrimSuffix(r.path, "/")
			if r.pathType == PathTypeExact {
				table, key = hr.exact, r.path
			}
			if prev, ok := table[key]; ok {
				warns = append(warns, Warning{rule.Source, fmt.Sprintf(
					"host %q path %s %q is also routed by %s, which wins",
					displayHost(host), r.pathType, p.Path, prev.source)})
				continue
			}
			r.backend = newBackend(p.Backend)
			table[key] = r
		}
	}
	if in.DefaultBackend != nil {
		rt.def = newBackend(*in.DefaultBackend)
	}
	return rt, warns
}

// hostRoutes returns the routes of a normalized rule host, making them.
func (rt *routes) hostRoutes(host string) *hostRoutes {
	m, key := rt.exact, host
	switch {
	case host == "":
		if rt.any == nil {
			rt.any = newHostRoutes()
		}
		return rt.any
	case strings.HasPrefix(host, "*."):
		m, key = rt.wildcard, host[2:]
	}
	hr, ok := m[key]
	if !ok {
		hr = newHostRoutes()
		m[key] = hr
	}
	return hr
}

func newHostRoutes() *hostRoutes {
	return &hostRoutes{exact: map[string]*route{}, prefix: map[string]*route{}}
}

func displayHost(h string) string {
	if h == "" {
		return "*"
	}
	return h
}

// compilePath checks one path of a rule.
func compilePath(source string, p api.IngressPath) (*route, error) {
	pt := p.PathType
	switch pt {
	case PathTypeExact, PathTypePrefix:
	case PathTypeImplementationSpecific, "":
		pt = PathTypePrefix
	default:
		return nil, fmt.Errorf("path %q: unknown pathType %q", p.Path, p.PathType)
	}
	if !strings.HasPrefix(p.Path, "/") {
		return nil, fmt.Errorf("path %q: does not start with /", p.Path)
	}
	if p.Path != cleanPath(p.Path) {
		return nil, fmt.Errorf("path %q: not a clean path (it could never match)", p.Path)
	}
	return &route{source: source, pathType: pt, path: p.Path}, nil
}

// normalizeRuleHost lowercases a rule's host and checks its form: a DNS
// name, or "*." and a DNS name.
func normalizeRuleHost(h string) (string, error) {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "" {
		return "", nil
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*:/ ") {
		return "", fmt.Errorf("host %q: not a DNS name or a wildcard of one label (*.example.com)", h)
	}
	return h, nil
}

// requestHost is the host of a request's Host header as rules name it:
// lowercase, without a port or a trailing dot.
func requestHost(hostport string) string {
	h := hostport
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if 'A' <= h[i] && h[i] <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// cleanPath resolves "." and ".." elements and repeated slashes, keeping a
// trailing slash: the path rules are matched against, so that
// "/public/../admin" is routed as "/admin" is.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && p[0] == '/' {
		return p
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// hostFor is the host routes a request for host uses: the exact host's,
// else the wildcard's covering it, else the hostless ones (nil when none).
func (rt *routes) hostFor(host string) *hostRoutes {
	if hr, ok := rt.exact[host]; ok {
		return hr
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if hr, ok := rt.wildcard[host[i+1:]]; ok {
			return hr
		}
	}
	return rt.any
}

// match returns the route of a request, nil when none matches (the
// DefaultBackend's business).
func (rt *routes) match(host, reqPath string) *route {
	hr := rt.hostFor(host)
	if hr == nil {
		return nil
	}
	return hr.match(cleanPath(reqPath))
}

// match finds the longest path matching p, Exact before Prefix at equal
// length. An Exact path matches only the whole of p, so it is at least as
// long as any Prefix match and is tried first; Prefix paths are then
// looked up element by element from the longest.
func (hr *hostRoutes) match(p string) *route {
	if r, ok := hr.exact[p]; ok {
		return r
	}
	if len(hr.prefix) == 0 {
		return nil
	}
	q := strings.TrimSuffix(p, "/")
	for {
		if r, ok := hr.prefix[q]; ok {
			return r
		}
		if q == "" {
			return nil
		}
		q = q[:strings.LastIndexByte(q, '/')]
	}
}
