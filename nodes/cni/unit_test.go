package cni

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestConfigValidate(t *testing.T) {
	ok := Config{PodCIDR: netip.MustParsePrefix("198.18.64.0/24"), StateDir: "/var/lib/berth/cni"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no cidr", func(c *Config) { c.PodCIDR = netip.Prefix{} }, "pod CIDR is not set"},
		{"ipv6", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("fd00::/64") }, "only IPv4"},
		{"host bits", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("198.18.64.5/24") }, "host bits"},
		{"too small", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("198.18.64.0/31") }, "no address"},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "state dir is not set"},
		{"relative state dir", func(c *Config) { c.StateDir = "cni" }, "not an absolute path"},
		{"long bridge", func(c *Config) { c.Bridge = "a-very-long-bridge" }, "bridge name"},
		{"slash in bridge", func(c *Config) { c.Bridge = "br/0" }, "bridge name"},
		{"network name", func(c *Config) { c.NetworkName = "../x" }, "network name"},
		{"mtu", func(c *Config) { c.MTU = 100 }, "MTU"},
		{"plugin dir", func(c *Config) { c.PluginDir = "cni" }, "plugin dir"},
		{"machine netns", func(c *Config) { c.MachineNetNS = "ns" }, "machine network namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if g := ok.Gateway(); g != netip.MustParseAddr("198.18.64.1") {
		t.Errorf("gateway %s", g)
	}
}

// TestConfList compares the generated configuration with
// testdata/conflist.golden (go test -update rewrites it).
func TestConfList(t *testing.T) {
	c := Config{PodCIDR: netip.MustParsePrefix("198.18.64.0/24"), StateDir: "/var/lib/berth/lab1/cni", MTU: 1450}
	got, err := c.ConfList()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "conflist.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("conflist differs from %s:\n%s", golden, got)
	}
	// Masquerade and port mapping are berth's nftables table's, never the
	// plugins' iptables rules.
	for _, bad := range []string{`"ipMasq": true`, "portmap", "/var/lib/cni"} {
		if strings.Contains(string(got), bad) {
			t.Errorf("conflist contains %s", bad)
		}
	}
}

func TestPodIDAndLabels(t *testing.T) {
	for _, id := range []string{"", "../x", "a/b", ".hidden", "a b"} {
		if checkPodID(id) == nil {
			t.Errorf("pod id %q accepted", id)
		}
	}
	for _, id := range []string{"a", "pod-1_2.3", "0123abcdef"} {
		if err := checkPodID(id); err != nil {
			t.Errorf("pod id %q: %v", id, err)
		}
	}
	for _, l := range []map[string]string{{"a": "b;c"}, {"a=b": "c"}, {"": "x"}} {
		if _, err := cniArgs(l); err == nil {
			t.Errorf("labels %v accepted", l)
		}
	}
	opts, err := cniArgs(map[string]string{"K8S_POD_NAME": "web-0", "K8S_POD_NAMESPACE": "default"})
	if err != nil || len(opts) != 3 {
		t.Errorf("cniArgs = %d options, %v; want IgnoreUnknown and two labels", len(opts), err)
	}
}

func TestCheckRoutes(t *testing.T) {
	good := []Route{
		{Dst: netip.MustParsePrefix("198.18.65.0/24"), Via: netip.MustParseAddr("198.18.0.12")},
		{Dst: netip.MustParsePrefix("198.18.66.0/24"), Via: netip.MustParseAddr("198.18.0.13")},
	}
	if err := checkRoutes(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    []Route
	}{
		{"host bits", []Route{{Dst: netip.MustParsePrefix("198.18.65.1/24"), Via: netip.MustParseAddr("198.18.0.12")}}},
		{"ipv6", []Route{{Dst: netip.MustParsePrefix("fd00::/64"), Via: netip.MustParseAddr("fd00::1")}}},
		{"no gateway", []Route{{Dst: netip.MustParsePrefix("198.18.65.0/24")}}},
		{"twice", []Route{good[0], {Dst: good[0].Dst, Via: netip.MustParseAddr("198.18.0.14")}}},
	} {
		if err := checkRoutes(tc.r); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
