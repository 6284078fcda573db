package v1alpha1

import (
	"net/netip"
	"testing"
)

func TestParseAddressRange(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "198.18.0.240/29", want: "198.18.0.241-198.18.0.246"},
		{in: "198.18.0.240/31", want: "198.18.0.240-198.18.0.241"},
		{in: "198.18.0.240/32", want: "198.18.0.240-198.18.0.240"},
		{in: "2001:db8::/126", want: "2001:db8::1-2001:db8::3"},
		{in: "198.18.0.250 - 198.18.0.252", want: "198.18.0.250-198.18.0.252"},
		{in: "198.18.0.250-198.18.0.250", want: "198.18.0.250-198.18.0.250"},
		{in: "198.18.0.252-198.18.0.250", err: `range "198.18.0.252-198.18.0.250" ends before it starts`},
		{in: "198.18.0.1-2001:db8::1", err: `range "198.18.0.1-2001:db8::1" mixes address families`},
		{in: "198.18.0.1/24", err: "198.18.0.1/24 has host bits set: the range is 198.18.0.0/24"},
		{in: "pool", err: `want a CIDR or first-last: netip.ParsePrefix("pool"): no '/'`},
	} {
		r, err := ParseAddressRange(tc.in)
		switch {
		case tc.err != "":
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case r.String() != tc.want:
			t.Errorf("%q = %s, want %s", tc.in, r, tc.want)
		}
	}
}

func TestAddressRangeContainsOverlaps(t *testing.T) {
	r, _ := ParseAddressRange("198.18.0.10-198.18.0.20")
	for a, want := range map[string]bool{"198.18.0.9": false, "198.18.0.10": true, "198.18.0.20": true, "198.18.0.21": false, "::ffff:198.18.0.10": false} {
		if got := r.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v", a, got)
		}
	}
	if r.Contains(netip.Addr{}) {
		t.Error("contains the zero address")
	}
	for p, want := range map[string]bool{"198.18.0.0/28": true, "198.18.0.20/32": true, "198.18.0.21/32": false, "198.18.0.0/29": false, "2001:db8::/32": false} {
		if got := r.Overlaps(RangeOf(netip.MustParsePrefix(p))); got != want {
			t.Errorf("Overlaps(%s) = %v", p, got)
		}
	}
	if got := RangeOf(netip.MustParsePrefix("198.19.0.7/16")).String(); got != "198.19.0.0-198.19.255.255" {
		t.Errorf("RangeOf = %s", got)
	}
}
