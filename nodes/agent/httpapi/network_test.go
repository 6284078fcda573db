package httpapi

import (
	"net/netip"
	"strings"
	"testing"

	"berth.dev/berth/nodes/api"
)

const validNetwork = `{"generation":4,"machine":"lab1","podCIDR":"198.18.64.0/24",
 "routes":[{"cidr":"198.18.65.0/24","via":"198.18.0.12","machine":"lab2"}],
 "dns":{"domain":"cluster.local"},
 "services":[{"namespace":"default","name":"web","clusterIPs":["198.19.0.10"],"ports":[{"port":80}],
  "endpoints":[{"ip":"198.18.64.2","machine":"lab1","pod":"default/web-1","ready":true,"ports":[{"port":8080}]}]}]}`

func TestSetNetwork(t *testing.T) {
	s := newTestServer(t, Options{})
	w := s.do("PUT", "/v1/network", validNetwork, "Content-Type", "application/json")
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	got := s.b.network[0]
	if got.Generation != 4 || got.Machine != "lab1" || got.PodCIDR != netip.MustParsePrefix("198.18.64.0/24") ||
		len(got.Services) != 1 || got.Services[0].Endpoints[0].Ports[0].Port != 8080 {
		t.Errorf("backend got %+v", got)
	}
	if want := `{"generation":4,"digest":"` + got.Digest() + `"}`; strings.TrimSpace(w.Body.String()) != want {
		t.Errorf("answer %s, want %s", w.Body, want)
	}
	w = s.do("GET", "/v1/network", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"podCIDR":"198.18.64.0/24"`) {
		t.Errorf("GET: %d %s", w.Code, w.Body)
	}
}

func TestSetNetworkStrictDecoding(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"empty body", "", "empty request body"},
		{"negative generation", `{"generation":-1,"machine":"m"}`, `"generation" must not be negative`},
		{"unknown field", `{"generation":1,"machine":"m","force":true}`, `unknown field "force"`},
		{"bad prefix", `{"generation":1,"machine":"m","podCIDR":"198.18.64.0/33"}`, "prefix length out of range"},
		{"bad address", `{"generation":1,"machine":"m","nodeIPs":["a.b.c.d"]}`, "ParseAddr"},
		{"trailing document", `{"generation":1} {}`, "data after the JSON document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Options{})
			w := s.do("PUT", "/v1/network", tc.body)
			if w.Code != 400 {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			if e := apiError(t, w); e.Kind != api.KindInvalid || !strings.Contains(e.Message, tc.want) {
				t.Errorf("got %s %q, want Invalid mentioning %q", e.Kind, e.Message, tc.want)
			}
			if calls := s.b.Calls(); len(calls) != 0 {
				t.Errorf("the backend was called: %v", calls)
			}
		})
	}
}
