package network

import (
	"os"
	"testing"

	"pgregory.net/rapid"

	"berth.dev/berth/nodes/api"
)

// TestDigests checks Result.Digests against api.Network.Digest on every
// fleet the tests build.
func TestDigests(t *testing.T) {
	check := func(t interface{ Fatalf(string, ...any) }, res *Result) {
		ds := res.Digests()
		if len(ds) != len(res.Networks) {
			t.Fatalf("%d digests for %d Networks", len(ds), len(res.Networks))
		}
		for name, n := range res.Networks {
			if want := n.Digest(); ds[name] != want {
				t.Fatalf("%s: digest %s, want %s", name, ds[name], want)
			}
		}
	}
	t.Run("fleet", func(t *testing.T) {
		first := compute(t, fleetInput(t, Memory{}))
		check(t, first)
		// The generation takes no part.
		for _, n := range first.Networks {
			n.Generation = 7
		}
		check(t, first)
	})
	t.Run("empty and odd Networks", func(t *testing.T) {
		res := &Result{Networks: map[string]*api.Network{
			"zero":  {},
			"empty": {Machine: "m", Services: []api.Service{}, Ingress: &api.Ingress{}, HeldIPs: nil},
			"html":  {Machine: "<m&>", DNS: api.ClusterDNS{Domain: "a<b"}},
		}}
		check(t, res)
	})
	t.Run("quickstart and seed", func(t *testing.T) {
		for _, dir := range []string{"../../examples/quickstart", "../../examples/seed"} {
			d := load(t, os.DirFS(dir))
			observed, second, last, mem := runLive(t, d)
			check(t, compute(t, Input{Desired: d, Machines: FromLive(observed, second, last), Memory: mem}))
		}
	})
	t.Run("generated", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			res, err := Compute(fleetGen(t))
			if err != nil {
				t.Fatal(err)
			}
			check(t, res)
		})
	})
}
