package ingress_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/ingress"
)

// The agent makes one Proxy, gives it each api.Ingress it is sent, logs
// the warnings, and serves until it stops.
func Example() {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "shop pod: %s%s", r.Host, r.URL.Path)
	}))
	defer pod.Close()
	ep := netip.MustParseAddrPort(pod.Listener.Addr().String())

	p, err := ingress.New(ingress.Options{})
	if err != nil {
		panic(err)
	}
	warnings := p.Update(&api.Ingress{Rules: []api.IngressRule{
		{Source: "shop/web", Host: "shop.example", Paths: []api.IngressPath{
			{Path: "/cart", PathType: "Prefix", Backend: api.IngressBackend{Service: "shop/web:80", Endpoints: []netip.AddrPort{ep}}},
		}},
		{Source: "zoo/web", Host: "shop.example", Paths: []api.IngressPath{
			{Path: "/cart/", PathType: "Prefix", Backend: api.IngressBackend{Service: "zoo/web:80"}},
		}},
	}})
	for _, w := range warnings {
		fmt.Println("warning:", w)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- p.Serve(ctx, []net.Listener{ln}, nil) }()

	for _, path := range []string{"/cart/items", "/cartoon"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+path, nil)
		req.Host = "shop.example"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Printf("%s: %d %s\n", path, res.StatusCode, strings.TrimSpace(string(body)))
	}
	stop()
	fmt.Println("serve:", <-served)
	// Output:
	// warning: zoo/web: host "shop.example" path Prefix "/cart/" is also routed by shop/web, which wins
	// /cart/items: 200 shop pod: shop.example/cart/items
	// /cartoon: 404 404 not found: no route for this host and path
	// serve: <nil>
}
