package nft

import (
	"sort"
	"strings"
	"testing"
	"time"
)

func frag(t *testing.T, s Service, prev *fragment) *fragment {
	t.Helper()
	f, err := compileService(&s, optionsOf(node()), prev)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// elems prints a plan's elements, typed by the sets of a compiled rule set.
func elems(t *testing.T, m map[string][]Element) string {
	t.Helper()
	r, err := Compile("t", node())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for set, es := range m {
		var s *Set
		for _, x := range r.Sets {
			if x.Name == set {
				s = x
			}
		}
		if s == nil {
			s = &Set{Key: []SetType{TypeIPv4Addr, TypeInetProto, TypeInetService}}
		}
		for _, e := range es {
			out = append(out, set+" "+e.text(s))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func TestPlanDiff(t *testing.T) {
	base := web(nil)
	cases := []struct {
		name       string
		old, new   *Service
		addE, delE string
	}{
		{name: "unchanged", old: &base, new: &base},
		{name: "new service", new: &base,
			addE: "cluster-ips 198.19.0.10; service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.16.5 . 8080; " +
				"service-endpoints 198.19.0.10 . tcp . 80 . 2 : 198.18.32.7 . 8080; service-ips 198.19.0.10 . tcp . 80"},
		{name: "removed service", old: &base,
			delE: "cluster-ips 198.19.0.10; service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.16.5 . 8080; " +
				"service-endpoints 198.19.0.10 . tcp . 80 . 2 : 198.18.32.7 . 8080; service-ips 198.19.0.10 . tcp . 80"},
		{name: "endpoint replaced keeps the other's slot", old: &base,
			new:  ptr(web(func(s *Service) { s.Endpoints[1].IP = addr("198.18.40.1") })),
			addE: "service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.40.1 . 8080",
			delE: "service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.16.5 . 8080"},
		{name: "endpoint not ready", old: &base, new: ptr(web(func(s *Service) { s.Endpoints[1].Ready = false })),
			addE: "service-endpoints 198.19.0.10 . tcp . 80 . 0 : 198.18.32.7 . 8080",
			delE: "service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.16.5 . 8080; service-endpoints 198.19.0.10 . tcp . 80 . 2 : 198.18.32.7 . 8080"},
		{name: "no endpoints left", old: &base, new: ptr(web(func(s *Service) { s.Endpoints = nil })),
			addE: `no-endpoint-reject 198.19.0.10 . tcp . 80 comment "shop/web:http"`,
			delE: "service-endpoints 198.19.0.10 . tcp . 80 . 1 : 198.18.16.5 . 8080; service-endpoints 198.19.0.10 . tcp . 80 . 2 : 198.18.32.7 . 8080; service-ips 198.19.0.10 . tcp . 80"},
		{name: "affinity timeout changed", old: ptr(web(func(s *Service) { s.AffinityTimeout = time.Hour })),
			new:  ptr(web(func(s *Service) { s.AffinityTimeout = 2 * time.Hour })),
			addE: "affinity-7200s 198.19.0.10 . tcp . 80", delE: "affinity-3600s 198.19.0.10 . tcp . 80"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var o, n *fragment
			if c.old != nil {
				o = frag(t, *c.old, nil)
			}
			if c.new != nil {
				n = frag(t, *c.new, o)
			}
			p := newPlan(&fragment{})
			p.diff(o, n)
			if p.full || len(p.addChains)+len(p.rewrite)+len(p.delChains)+len(p.addSets)+len(p.delSets) != 0 {
				t.Fatalf("a Service changed chains or sets: %+v", p)
			}
			for _, x := range []struct{ what, got, want string }{
				{"added elements", elems(t, p.addElems), c.addE},
				{"deleted elements", elems(t, p.delElems), c.delE},
			} {
				if x.got != x.want {
					t.Errorf("%s:\n%q\nwant\n%q", x.what, x.got, x.want)
				}
			}
		})
	}
}

func TestStableOrder(t *testing.T) {
	a, b, c, d := addrPort("198.18.0.1:80"), addrPort("198.18.0.2:80"), addrPort("198.18.0.3:80"), addrPort("198.18.0.4:80")
	for _, x := range []struct {
		name   string
		l, old endpointList
		want   endpointList
	}{
		{"fresh", endpointList{c, a, b}, nil, endpointList{a, b, c}},
		{"one replaced", endpointList{a, d, c}, endpointList{c, b, a}, endpointList{c, d, a}},
		{"count changed", endpointList{a, d}, endpointList{c, b, a}, endpointList{a, d}},
		{"all replaced", endpointList{d, c}, endpointList{b, a}, endpointList{c, d}},
	} {
		if got := stableOrder(sortedUnique(x.l), x.old); !sliceEqual(got, x.want) {
			t.Errorf("%s: %v, want %v", x.name, got, x.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
