package network

import (
	"net/netip"
	"testing"

	"berth.dev/berth/render/api/v1alpha1"
)

func TestAddrArithmetic(t *testing.T) {
	for _, tc := range []struct {
		a     string
		off   uint64
		shift uint
		want  string
	}{
		{"198.18.0.0", 5, 0, "198.18.0.5"},
		{"198.18.64.0", 3, 8, "198.18.67.0"},
		{"255.255.255.255", 1, 0, "invalid IP"},
		{"198.18.0.0", 1, 32, "invalid IP"},
		{"2001:db8::", 1, 64, "2001:db8:0:1::"},
		{"2001:db8::", 3, 8, "2001:db8::300"},
		{"2001:db8::ffff:ffff:ffff:ffff", 1, 0, "2001:db8:0:1::"},
		{"2001:db8::", 1 << 62, 4, "2001:db8:0:4::"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, 0, "invalid IP"},
	} {
		if got := addrAddShifted(netip.MustParseAddr(tc.a), tc.off, tc.shift).String(); got != tc.want {
			t.Errorf("%s + %d<<%d = %s, want %s", tc.a, tc.off, tc.shift, got, tc.want)
		}
	}
	for r, want := range map[string]uint64{
		"198.19.0.0/16":           65534,
		"198.18.0.10-198.18.0.10": 1,
		"2001:db8::/64":           1 << 62,
		"2001:db8::/120":          255,
	} {
		rng, err := v1alpha1.ParseAddressRange(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := span(rng); got != want {
			t.Errorf("span(%s) = %d, want %d", r, got, want)
		}
	}
}

func TestPoolsIPv6(t *testing.T) {
	svc, ok := serviceRange(netip.MustParsePrefix("2001:db8:1::/112"))
	if !ok || svc.First.String() != "2001:db8:1::2" || svc.Last.String() != "2001:db8:1::ffff" {
		t.Fatalf("service range %s", svc)
	}
	pool := newAddrPool([]v1alpha1.AddressRange{svc})
	seen := map[netip.Addr]bool{}
	for i := range 1000 {
		a, ok := pool.alloc(string(rune(i)))
		if !ok || seen[a] || !svc.Contains(a) {
			t.Fatalf("alloc %d: %s (ok %v, seen %v)", i, a, ok, seen[a])
		}
		seen[a] = true
	}
	cidrs := newCIDRPool(netip.MustParsePrefix("2001:db8::/48"), 64)
	var got []netip.Prefix
	for _, m := range []string{"a", "b", "c"} {
		p, ok := cidrs.alloc(m)
		if !ok || p.Bits() != 64 || !netip.MustParsePrefix("2001:db8::/48").Contains(p.Addr()) {
			t.Fatalf("pod CIDR for %s: %s %v", m, p, ok)
		}
		for _, q := range got {
			if q.Overlaps(p) {
				t.Fatalf("%s overlaps %s", p, q)
			}
		}
		got = append(got, p)
	}
	if _, ok := serviceRange(netip.MustParsePrefix("198.19.0.0/31")); ok {
		t.Error("a /31 has addresses to give out")
	}
}
