package dns

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzLookup feeds the View names from the wire: whatever the name, a
// lookup does not panic, an answer is either records or one SOA, and a
// name in the zone is always the View's to answer.
func FuzzLookup(f *testing.F) {
	for _, s := range []string{
		"web.default.svc.cluster.local.",
		"10-244-3-3.kube-system.pod.cluster.local.",
		"fd00-244--3.kube-system.pod.cluster.local.",
		"-.-.pod.cluster.local.",
		"1.0.96.10.in-addr.arpa.",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa.",
		"_http._tcp.web.default.svc.cluster.local.",
		"a.b.c.d.e.f.cluster.local.",
		"cluster.local.",
		".cluster.local.",
		"example.com.",
	} {
		f.Add(s, uint16(dns.TypeA))
	}
	in := testInput()
	verified := mustView(f, in)
	in.PodMode = PodsInsecure
	insecure := mustView(f, in)
	f.Fuzz(func(t *testing.T, name string, qtype uint16) {
		if !strings.HasSuffix(name, ".") {
			name += "."
		}
		for _, v := range []*View{verified, insecure} {
			res, ok := v.Lookup(name, qtype)
			if !ok {
				if v.InZone(name) {
					t.Fatalf("%q in the zone not answered", name)
				}
				continue
			}
			if len(res.Answer) == 0 && res.Rcode != dns.RcodeServerFailure && len(res.Ns) != 1 {
				t.Fatalf("%q %d: no answer and %d authority records", name, qtype, len(res.Ns))
			}
		}
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 192.0.2.1\nsearch a b .\noptions ndots:2 edns0\n")
	f.Add("domain x\n# c\n;d\noptions\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseResolvConf(strings.NewReader(s))
		if err != nil {
			return
		}
		back, err := ParseResolvConf(strings.NewReader(string(c.Bytes())))
		if err != nil {
			t.Fatal(err)
		}
		if !equalConf(normal(c), normal(back)) {
			t.Fatalf("written and read again:\n%+v\n%+v", c, back)
		}
	})
}

// normal makes an empty search list nil: written out, an empty list and
// none are the same file.
func normal(c ResolvConf) ResolvConf {
	if len(c.Searches) == 0 {
		c.Searches = nil
	}
	return c
}
