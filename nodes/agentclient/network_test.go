package agentclient_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
)

func TestSetNetworkAndRead(t *testing.T) {
	b := &fakeBackend{}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx := context.Background()

	if n, err := c.Network(ctx); err != nil || n.Generation != 0 || n.PodCIDR.IsValid() {
		t.Fatalf("network before any: %+v, %v", n, err)
	}
	n := api.Network{
		Generation: 2, Machine: "lab1", PodCIDR: netip.MustParsePrefix("198.18.64.0/24"),
		Routes:  []api.PodRoute{{CIDR: netip.MustParsePrefix("198.18.65.0/24"), Via: netip.MustParseAddr("198.18.0.12"), Machine: "lab2"}},
		HeldIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")},
		Ingress: &api.Ingress{TLS: []api.IngressTLS{{Source: "default/tls", Cert: api.Sensitive("cert"), Key: api.Sensitive("key")}}},
	}
	if err := c.SetNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, b.network) {
		t.Errorf("the agent got another network:\n%+v\nsent:\n%+v", b.network, n)
	}
	got, err := c.Network(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(n, got) || got.Digest() != n.Digest() {
		t.Errorf("read back:\n%+v\nsent:\n%+v", got, n)
	}
	if err := c.SetNetwork(ctx, api.Network{Generation: 1, Machine: "lab1"}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("older generation: %v, want ErrConflict", err)
	}
}
