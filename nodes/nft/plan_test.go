package nft

import (
	"sort"
	"strings"
	"testing"
	"time"
)

func frag(t *testing.T, s Service) *fragment {
	t.Helper()
	f, err := compileService(&s, svcOptions{clusterCIDRs: true})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func names(cs []*Chain) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name[:strings.Index(c.Name, "-")])
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func elems(m map[string][]Element) string {
	var out []string
	for set, es := range m {
		for _, e := range es {
			out = append(out, set+" "+e.String())
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func TestPlanDiff(t *testing.T) {
	base := web(nil)
	cases := []struct {
		name                          string
		old, new                      *Service
		add, rewrite, del, addE, delE string
		full                          bool
	}{
		{name: "unchanged", old: &base, new: &base},
		{name: "new service", new: &base, add: "endpoint endpoint service",
			addE: "cluster-ips 198.19.0.10; service-ips 198.19.0.10 . tcp . 80 : goto service-KHN6ECMT-shop/web/tcp/http"},
		{name: "removed service", old: &base, del: "endpoint endpoint service",
			delE: "cluster-ips 198.19.0.10; service-ips 198.19.0.10 . tcp . 80 : goto service-KHN6ECMT-shop/web/tcp/http"},
		{name: "endpoint replaced", old: &base, new: ptr(web(func(s *Service) { s.Endpoints[0].IP = addr("198.18.32.9") })),
			add: "endpoint", rewrite: "service", del: "endpoint"},
		{name: "endpoint not ready", old: &base, new: ptr(web(func(s *Service) { s.Endpoints[1].Ready = false })),
			rewrite: "service", del: "endpoint"},
		{name: "no endpoints left", old: &base, new: ptr(web(func(s *Service) { s.Endpoints = nil })),
			del:  "endpoint endpoint service",
			addE: `no-endpoint-services 198.19.0.10 . tcp . 80 comment "shop/web:http" : goto reject-chain`,
			delE: "service-ips 198.19.0.10 . tcp . 80 : goto service-KHN6ECMT-shop/web/tcp/http"},
		{name: "affinity timeout changed", old: ptr(web(func(s *Service) { s.AffinityTimeout = time.Hour })),
			new: ptr(web(func(s *Service) { s.AffinityTimeout = 2 * time.Hour })), full: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var o, n *fragment
			if c.old != nil {
				o = frag(t, *c.old)
			}
			if c.new != nil {
				n = frag(t, *c.new)
			}
			p := newPlan(&fragment{})
			p.diff(o, n)
			if p.full != c.full {
				t.Fatalf("full = %v, want %v", p.full, c.full)
			}
			if c.full {
				return
			}
			for _, x := range []struct{ what, got, want string }{
				{"added chains", names(p.addChains), c.add},
				{"rewritten chains", names(p.rewrite), c.rewrite},
				{"deleted chains", names(p.delChains), c.del},
				{"added elements", elems(p.addElems), c.addE},
				{"deleted elements", elems(p.delElems), c.delE},
			} {
				if x.got != x.want {
					t.Errorf("%s: %q, want %q", x.what, x.got, x.want)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
