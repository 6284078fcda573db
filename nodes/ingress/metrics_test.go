package ingress

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"berth.dev/berth/nodes/api"
)

func TestMetricsCount(t *testing.T) {
	ca := newTestCA(t)
	p := startProxy(t, Options{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collectors()...)
	good := newBackendServer(t, "good")
	in := &api.Ingress{Rules: []api.IngressRule{{Source: "ns/i", Host: "h.example", Paths: []api.IngressPath{
		{Path: "/ok", PathType: "Prefix", Backend: api.IngressBackend{Service: "ok", Endpoints: []netip.AddrPort{good.addr()}}},
		{Path: "/none", PathType: "Prefix", Backend: api.IngressBackend{Service: "none"}},
		{Path: "/down", PathType: "Prefix", Backend: api.IngressBackend{Service: "down", Endpoints: []netip.AddrPort{refusedAddr(t), refusedAddr(t)}}},
	}}}, TLS: []api.IngressTLS{ca.tlsEntry(t, "ns/tls", "secure.example"), {Source: "ns/bad"}}}
	if w := p.Update(in); len(w) != 1 {
		t.Fatalf("warnings %v, want one", w)
	}
	for _, path := range []string{"/ok", "/ok", "/ok/x", "/none", "/down", "/missing"} {
		p.get(t, http.MethodGet, "h.example", path, nil)
	}
	p.get(t, http.MethodGet, "secure.example", "/", nil)

	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			name := mf.GetName()
			for _, l := range m.Label {
				name += "{" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				got[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[name] = m.Gauge.GetValue()
			}
		}
	}
	want := map[string]float64{
		"berth_ingress_requests_total{proxied}":       3,
		"berth_ingress_requests_total{not_found}":     1,
		"berth_ingress_requests_total{no_endpoint}":   1,
		"berth_ingress_requests_total{bad_gateway}":   1,
		"berth_ingress_requests_total{redirect}":      1,
		"berth_ingress_endpoint_responses_total{2xx}": 3,
		"berth_ingress_warnings":                      1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// /down's request was retried once, on its second endpoint.
	if r := got["berth_ingress_retries_total"]; r != 1 {
		t.Errorf("retries %v, want 1", r)
	}
}
