package ingress

import (
	"fmt"
	"strings"
	"testing"

	"berth.dev/berth/nodes/api"
)

// path is one path of a test rule: "Prefix /foo" names its backend
// "Prefix /foo".
func paths(specs ...string) []api.IngressPath {
	var ps []api.IngressPath
	for _, s := range specs {
		pt, p, _ := strings.Cut(s, " ")
		ps = append(ps, api.IngressPath{Path: p, PathType: pt, Backend: api.IngressBackend{Service: s}})
	}
	return ps
}

func testBackend(ib api.IngressBackend) *backend { return &backend{service: ib.Service} }

// routeOf is the backend name a request gets, "" when none.
func routeOf(rt *routes, host, p string) string {
	if r := rt.match(host, p); r != nil {
		return r.backend.service
	}
	if rt.def != nil {
		return "default"
	}
	return ""
}

// TestPathMatchingSpecExamples runs the examples table of the Kubernetes
// Ingress documentation ("Examples" under "Path types").
func TestPathMatchingSpecExamples(t *testing.T) {
	tests := []struct {
		paths []string
		req   string
		want  string // the matching path, "" for none
	}{
		{[]string{"Prefix /"}, "/anything/at/all", "Prefix /"},
		{[]string{"Prefix /"}, "/", "Prefix /"},
		{[]string{"Exact /foo"}, "/foo", "Exact /foo"},
		{[]string{"Exact /foo"}, "/bar", ""},
		{[]string{"Exact /foo"}, "/foo/", ""},
		{[]string{"Exact /foo/"}, "/foo", ""},
		{[]string{"Prefix /foo"}, "/foo", "Prefix /foo"},
		{[]string{"Prefix /foo"}, "/foo/", "Prefix /foo"},
		{[]string{"Prefix /foo/"}, "/foo", "Prefix /foo/"},
		{[]string{"Prefix /foo/"}, "/foo/", "Prefix /foo/"},
		{[]string{"Prefix /aaa/bb"}, "/aaa/bbb", ""},
		{[]string{"Prefix /aaa/bbb"}, "/aaa/bbb", "Prefix /aaa/bbb"},
		{[]string{"Prefix /aaa/bbb/"}, "/aaa/bbb", "Prefix /aaa/bbb/"},
		{[]string{"Prefix /aaa/bbb"}, "/aaa/bbb/", "Prefix /aaa/bbb"},
		{[]string{"Prefix /aaa/bbb"}, "/aaa/bbb/ccc", "Prefix /aaa/bbb"},
		{[]string{"Prefix /aaa/bbb"}, "/aaa/bbbxyz", ""},
		{[]string{"Prefix /", "Prefix /aaa"}, "/aaa/ccc", "Prefix /aaa"},
		{[]string{"Prefix /", "Prefix /aaa", "Prefix /aaa/bbb"}, "/aaa/bbb", "Prefix /aaa/bbb"},
		{[]string{"Prefix /", "Prefix /aaa", "Prefix /aaa/bbb"}, "/ccc", "Prefix /"},
		{[]string{"Prefix /aaa"}, "/ccc", ""},
		{[]string{"Prefix /foo", "Exact /foo"}, "/foo", "Exact /foo"},
		{[]string{"Exact /foo", "Prefix /foo"}, "/foo", "Exact /foo"},
		// Beyond the documented table.
		{[]string{"ImplementationSpecific /foo"}, "/foo/bar", "ImplementationSpecific /foo"},
		{[]string{"ImplementationSpecific /foo"}, "/foobar", ""},
		{[]string{"Exact /foo/", "Prefix /foo"}, "/foo/", "Exact /foo/"},
		{[]string{"Exact /foo", "Prefix /foo/bar"}, "/foo/bar/baz", "Prefix /foo/bar"},
		{[]string{"Prefix /foo", "Prefix /foo/bar"}, "/foo/ba", "Prefix /foo"},
		{[]string{"Exact /"}, "/", "Exact /"},
		{[]string{"Exact /"}, "/x", ""},
		// Requests are matched on their cleaned path, as nginx does.
		{[]string{"Prefix /public", "Prefix /admin"}, "/public/../admin/x", "Prefix /admin"},
		{[]string{"Prefix /public", "Exact /admin"}, "/public/./../admin", "Exact /admin"},
		{[]string{"Exact /a/b"}, "//a//b", "Exact /a/b"},
		{[]string{"Prefix /a"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %s", tt.paths, tt.req), func(t *testing.T) {
			in := &api.Ingress{Rules: []api.IngressRule{{Source: "ns/ing", Paths: paths(tt.paths...)}}}
			rt, warns := compileRoutes(in, testBackend)
			if len(warns) != 0 {
				t.Fatalf("warnings: %v", warns)
			}
			if got := routeOf(rt, "example.com", tt.req); got != tt.want {
				t.Errorf("request %q: got %q, want %q", tt.req, got, tt.want)
			}
		})
	}
}

func TestHostMatching(t *testing.T) {
	in := &api.Ingress{
		Rules: []api.IngressRule{
			{Source: "ns/exact", Host: "foo.bar.com", Paths: paths("Prefix /exact")},
			{Source: "ns/wild", Host: "*.bar.com", Paths: paths("Prefix /wild")},
			{Source: "ns/any", Paths: paths("Prefix /any")},
			{Source: "ns/upper", Host: "UPPER.example.", Paths: paths("Prefix /upper")},
		},
		DefaultBackend: &api.IngressBackend{Service: "default"},
	}
	rt, warns := compileRoutes(in, testBackend)
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	tests := []struct{ host, path, want string }{
		{"foo.bar.com", "/exact", "Prefix /exact"},
		{"FOO.bar.com", "/exact/x", "Prefix /exact"},
		{"foo.bar.com.", "/exact", "Prefix /exact"},
		// The exact host's rules are the only ones for it: no fall
		// through to the wildcard's or the hostless ones.
		{"foo.bar.com", "/wild", "default"},
		{"foo.bar.com", "/any", "default"},
		{"baz.bar.com", "/wild", "Prefix /wild"},
		{"baz.bar.com", "/exact", "default"},
		// A wildcard covers exactly one label.
		{"bar.com", "/wild", "default"},
		{"bar.com", "/any", "Prefix /any"},
		{"x.baz.bar.com", "/wild", "default"},
		{"x.baz.bar.com", "/any", "Prefix /any"},
		{"other.org", "/any/thing", "Prefix /any"},
		{"upper.example", "/upper", "Prefix /upper"},
		{"", "/any", "Prefix /any"},
	}
	for _, tt := range tests {
		if got := routeOf(rt, requestHost(tt.host), tt.path); got != tt.want {
			t.Errorf("%s%s: got %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestRequestHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":        "example.com",
		"Example.COM:8080":   "example.com",
		"example.com.":       "example.com",
		"example.com.:443":   "example.com",
		"10.0.0.1:80":        "10.0.0.1",
		"[::1]:8443":         "::1",
		"[2001:db8::1]":      "2001:db8::1",
		"":                   "",
		"a.b.c":              "a.b.c",
		"xn--nxasmq6b.com:1": "xn--nxasmq6b.com",
	} {
		if got := requestHost(in); got != want {
			t.Errorf("requestHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConflictsFirstSourceWins checks that of two Ingresses claiming the
// same host and path, the first by name wins whatever the order they come
// in, and the other is reported.
func TestConflictsFirstSourceWins(t *testing.T) {
	a := api.IngressRule{Source: "ns/a", Host: "x.com", Paths: []api.IngressPath{
		{Path: "/app", PathType: "Prefix", Backend: api.IngressBackend{Service: "ns/a-svc:80"}},
		{Path: "/only-a", PathType: "Exact", Backend: api.IngressBackend{Service: "ns/a-only:80"}},
	}}
	b := api.IngressRule{Source: "ns/b", Host: "X.com", Paths: []api.IngressPath{
		{Path: "/app/", PathType: "ImplementationSpecific", Backend: api.IngressBackend{Service: "ns/b-svc:80"}},
		{Path: "/app", PathType: "Exact", Backend: api.IngressBackend{Service: "ns/b-exact:80"}},
	}}
	for _, order := range [][]api.IngressRule{{a, b}, {b, a}} {
		rt, warns := compileRoutes(&api.Ingress{Rules: order}, testBackend)
		if got := routeOf(rt, "x.com", "/app/x"); got != "ns/a-svc:80" {
			t.Errorf("order %s first: /app/x routed to %q, want ns/a-svc:80", order[0].Source, got)
		}
		// Exact /app of b does not conflict with Prefix /app of a.
		if got := routeOf(rt, "x.com", "/app"); got != "ns/b-exact:80" {
			t.Errorf("/app routed to %q, want ns/b-exact:80", got)
		}
		if got := routeOf(rt, "x.com", "/only-a"); got != "ns/a-only:80" {
			t.Errorf("/only-a routed to %q", got)
		}
		if len(warns) != 1 {
			t.Fatalf("warnings %v, want one", warns)
		}
		w := warns[0]
		if w.Source != "ns/b" || !strings.Contains(w.Message, "ns/a") || !strings.Contains(w.Message, `"/app/"`) {
			t.Errorf("warning %q does not name the loser, the path and the winner", w)
		}
	}
}

func TestInvalidRulesReported(t *testing.T) {
	in := &api.Ingress{Rules: []api.IngressRule{
		{Source: "ns/bad-host", Host: "foo*.com", Paths: paths("Prefix /")},
		{Source: "ns/bad-paths", Host: "ok.com", Paths: []api.IngressPath{
			{Path: "relative", PathType: "Prefix"},
			{Path: "/x", PathType: "Regex"},
			{Path: "/a/../b", PathType: "Exact"},
			{Path: "/good", PathType: "Prefix", Backend: api.IngressBackend{Service: "good"}},
		}},
	}}
	rt, warns := compileRoutes(in, testBackend)
	if len(warns) != 4 {
		t.Fatalf("got warnings %v, want 4", warns)
	}
	if warns[0].Source != "ns/bad-host" {
		t.Errorf("first warning %v is not about ns/bad-host", warns[0])
	}
	if got := routeOf(rt, "ok.com", "/good/1"); got != "good" {
		t.Errorf("the valid path of a rule with bad ones is not served: got %q", got)
	}
	if got := routeOf(rt, "foo.com", "/"); got != "" {
		t.Errorf("a rule with a bad host is served: %q", got)
	}
}

func TestNilAndEmptyIngress(t *testing.T) {
	for _, in := range []*api.Ingress{nil, {}} {
		rt, warns := compileRoutes(in, testBackend)
		if len(warns) != 0 || routeOf(rt, "a.com", "/") != "" {
			t.Errorf("%v: routes something or warns %v", in, warns)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":          "/",
		"/":         "/",
		"/a/b/":     "/a/b/",
		"/a//b":     "/a/b",
		"/a/./b/":   "/a/b/",
		"/a/../../": "/",
		"/..":       "/",
		"/.well/x":  "/.well/x",
		"/a/b..":    "/a/b..",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}
