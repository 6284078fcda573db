package ingress

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	"berth.dev/berth/nodes/api"
)

// drawPath draws a path of up to depth elements from a small alphabet (so
// that paths share prefixes), with or without a trailing slash.
func drawPath(t *rapid.T, label string, depth int) string {
	n := rapid.IntRange(0, depth).Draw(t, label+"-depth")
	p := ""
	for range n {
		p += "/" + rapid.SampledFrom([]string{"a", "b", "ab", "a.b"}).Draw(t, label+"-elem")
	}
	if p == "" || rapid.Bool().Draw(t, label+"-slash") {
		p += "/"
	}
	return p
}

// specMatch is the Ingress specification's rule written plainly: of the
// paths matching p, the longest wins, Exact before Prefix at equal
// length; Prefix paths match by element, ignoring a trailing slash.
func specMatch(ps []api.IngressPath, p string) string {
	best, bestLen, bestExact := "", -1, false
	for _, x := range ps {
		exact := x.PathType == PathTypeExact
		var ok bool
		var n int
		if exact {
			ok, n = p == x.Path, len(x.Path)
		} else {
			q := strings.TrimSuffix(x.Path, "/")
			ok, n = q == "" || p == q || strings.HasPrefix(p, q+"/"), len(q)
		}
		if ok && (n > bestLen || n == bestLen && exact && !bestExact) {
			best, bestLen, bestExact = x.Backend.Service, n, exact
		}
	}
	return best
}

// TestMatchAgreesWithSpec checks the map walk of hostRoutes.match against
// a linear reading of the specification, on random path sets.
func TestMatchAgreesWithSpec(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seen := map[string]bool{}
		var ps []api.IngressPath
		for range rapid.IntRange(0, 8).Draw(t, "paths") {
			pt := rapid.SampledFrom([]string{PathTypeExact, PathTypePrefix, PathTypeImplementationSpecific}).Draw(t, "type")
			p := drawPath(t, "path", 3)
			key := pt + " " + p
			if pt != PathTypeExact {
				key = "Prefix " + strings.TrimSuffix(p, "/")
			}
			if seen[key] {
				continue // a conflict: tested elsewhere
			}
			seen[key] = true
			ps = append(ps, api.IngressPath{Path: p, PathType: pt, Backend: api.IngressBackend{Service: key}})
		}
		rt, warns := compileRoutes(&api.Ingress{Rules: []api.IngressRule{{Source: "ns/i", Paths: ps}}}, testBackend)
		if len(warns) != 0 {
			t.Fatalf("warnings %v", warns)
		}
		req := drawPath(t, "request", 4)
		if got, want := routeOf(rt, "h", req), specMatch(ps, req); got != want {
			t.Fatalf("request %q: got %q, the spec says %q", req, got, want)
		}
	})
}
