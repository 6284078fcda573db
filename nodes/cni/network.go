package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"

	"berth.dev/berth/nodes/runtime/netns"
)

// Defaults for the optional Config fields.
const (
	DefaultBridge      = "berth0"
	DefaultNetworkName = "berth"
	DefaultPluginDir   = "/usr/lib/cni"
)

// PodInterface is the pod's end of its veth, inside the pod's namespace.
const PodInterface = "eth0"

// cniVersion is the newest spec Debian's 1.1.1 plugins speak
// (`CNI_COMMAND=VERSION /usr/lib/cni/bridge`).
const cniVersion = "1.0.0"

// plugins are the binaries the generated configuration runs.
var plugins = []string{"bridge", "host-local", "loopback"}

// rollbackTimeout bounds the DEL that undoes a failed ADD, which runs even
// when the caller's context is already done.
const rollbackTimeout = 30 * time.Second

// Config describes one machine's pod network.
type Config struct {
	// PodCIDR is the machine's pod CIDR (198.18.64.0/24, say). Its first
	// address is the gateway, held by the bridge; pods get the others.
	PodCIDR netip.Prefix
	// StateDir holds host-local's data dir (StateDir/ipam) and libcni's
	// result cache (StateDir/cache). Required, one per machine: machines
	// sharing a filesystem must not share it.
	StateDir string
	// Bridge is the bridge's name in the machine's network namespace
	// (default DefaultBridge).
	Bridge string
	// NetworkName names the CNI network (default DefaultNetworkName): it
	// keys host-local's allocations and libcni's cache entries.
	NetworkName string
	// PluginDir holds the plugin binaries (default DefaultPluginDir).
	PluginDir string
	// MTU of the bridge and the veths; 0 leaves the plugin's default.
	MTU int
	// MachineNetNS is the path of the machine's network namespace, where
	// the bridge lives and the plugins run. Empty means the calling
	// process's own, which is where an agent runs.
	MachineNetNS string
	// Logger receives one line per attach, detach and collected leak;
	// nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.NetworkName == "" {
		c.NetworkName = DefaultNetworkName
	}
	if c.PluginDir == "" {
		c.PluginDir = DefaultPluginDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// linkName is what the kernel accepts as an interface name.
var linkName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// networkName is what libcni accepts as a network name.
var networkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Validate reports what is wrong with c; unset optional fields take their
// defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	switch {
	case !c.PodCIDR.IsValid():
		errs = append(errs, errors.New("pod CIDR is not set"))
	case !c.PodCIDR.Addr().Is4():
		errs = append(errs, fmt.Errorf("pod CIDR %s: only IPv4 is supported", c.PodCIDR))
	case c.PodCIDR.Masked() != c.PodCIDR:
		errs = append(errs, fmt.Errorf("pod CIDR %s has host bits set (want %s)", c.PodCIDR, c.PodCIDR.Masked()))
	case c.PodCIDR.Bits() > 30:
		errs = append(errs, fmt.Errorf("pod CIDR %s leaves no address for a pod beside the gateway", c.PodCIDR))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state dir is not set"))
	} else if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q is not an absolute path", c.StateDir))
	}
	if !linkName.MatchString(c.Bridge) {
		errs = append(errs, fmt.Errorf("bridge name %q is not a valid interface name (at most 15 of A-Z a-z 0-9 _ . -)", c.Bridge))
	}
	if !networkName.MatchString(c.NetworkName) {
		errs = append(errs, fmt.Errorf("network name %q: want letters, digits, _ . - only", c.NetworkName))
	}
	if !filepath.IsAbs(c.PluginDir) {
		errs = append(errs, fmt.Errorf("plugin dir %q is not an absolute path", c.PluginDir))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("MTU %d out of range 576-65535", c.MTU))
	}
	if c.MachineNetNS != "" && !filepath.IsAbs(c.MachineNetNS) {
		errs = append(errs, fmt.Errorf("machine network namespace %q is not an absolute path", c.MachineNetNS))
	}
	return errors.Join(errs...)
}

// Gateway is the bridge's address: the first address of the pod CIDR.
func (c Config) Gateway() netip.Addr { return c.PodCIDR.Masked().Addr().Next() }

func (c Config) ipamDir() string  { return filepath.Join(c.StateDir, "ipam") }
func (c Config) cacheDir() string { return filepath.Join(c.StateDir, "cache") }

// allocDir is where host-local keeps one file per allocated address.
func (c Config) allocDir() string { return filepath.Join(c.ipamDir(), c.NetworkName) }

type confList struct {
	CNIVersion string       `json:"cniVersion"`
	Name       string       `json:"name"`
	Plugins    []bridgeConf `json:"plugins"`
}

type bridgeConf struct {
	Type             string   `json:"type"`
	Bridge           string   `json:"bridge"`
	IsGateway        bool     `json:"isGateway"`
	IsDefaultGateway bool     `json:"isDefaultGateway"`
	IPMasq           bool     `json:"ipMasq"`
	HairpinMode      bool     `json:"hairpinMode"`
	MTU              int      `json:"mtu,omitempty"`
	IPAM             ipamConf `json:"ipam"`
}

type ipamConf struct {
	Type    string      `json:"type"`
	Ranges  [][]ipRange `json:"ranges"`
	DataDir string      `json:"dataDir"`
}

type ipRange struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
}

// ConfList is the network configuration list the plugins are run with: a
// bridge holding the gateway address, with hairpin mode and without
// masquerade, addressed by host-local from the pod CIDR. c must be valid.
func (c Config) ConfList() ([]byte, error) {
	c = c.withDefaults()
	cl := confList{
		CNIVersion: cniVersion,
		Name:       c.NetworkName,
		Plugins: []bridgeConf{{
			Type:             "bridge",
			Bridge:           c.Bridge,
			IsGateway:        true,
			IsDefaultGateway: true,
			IPMasq:           false,
			HairpinMode:      true,
			MTU:              c.MTU,
			IPAM: ipamConf{
				Type:    "host-local",
				Ranges:  [][]ipRange{{{Subnet: c.PodCIDR.String(), Gateway: c.Gateway().String()}}},
				DataDir: c.ipamDir(),
			},
		}},
	}
	b, err := json.MarshalIndent(cl, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI configuration: %w", err)
	}
	return b, nil
}

// Attachment is what a pod got from Attach.
type Attachment struct {
	// Interface is the pod's interface (PodInterface).
	Interface string
	// MAC is Interface's hardware address.
	MAC string
	// IPs are the pod's addresses, with the pod CIDR's prefix length.
	IPs []netip.Prefix
	// Gateway is the pod's default gateway, the bridge's address.
	Gateway netip.Addr
}

// Network attaches pods to one machine's pod network. Its methods may be
// called from several goroutines; the plugins run one at a time.
type Network struct {
	cfg Config
	cni gocni.CNI
	log *slog.Logger
	// turn serialises CNI calls: the plugins are not safe to run
	// concurrently on one bridge and one host-local data dir. A channel
	// rather than a mutex so that waiting for it honours ctx.
	turn chan struct{}
}

// New checks cfg and the plugins, creates the state directories and
// returns the machine's Network. The bridge is made by the first Attach.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	cfg = cfg.withDefaults()
	for _, p := range plugins {
		path := filepath.Join(cfg.PluginDir, p)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("pod network: CNI plugin %s (Debian package containernetworking-plugins): %w", p, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("pod network: CNI plugin %s is not an executable file", path)
		}
	}
	for _, d := range []string{cfg.allocDir(), cfg.cacheDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("pod network: %w", err)
		}
	}
	conf, err := cfg.ConfList()
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	// The bridge network is loaded first so that it is eth0; go-cni's
	// loopback network names its interface lo whatever its position.
	c, err := gocni.New(
		gocni.WithPluginDir([]string{cfg.PluginDir}),
		gocni.WithMinNetworkCount(2),
		gocni.WithInterfacePrefix("eth"),
		gocni.WithConfListBytes(conf),
		gocni.WithLoNetwork,
	)
	if err != nil {
		return nil, fmt.Errorf("pod network: load CNI configuration: %w", err)
	}
	return &Network{
		cfg:  cfg,
		cni:  c,
		log:  cfg.Logger.With("component", "cni"),
		turn: make(chan struct{}, 1),
	}, nil
}

// Config returns the network's configuration, defaults filled in.
func (n *Network) Config() Config { return n.cfg }

// acquire waits for the network's turn to run plugins.
func (n *Network) acquire(ctx context.Context) (release func(), err error) {
	select {
	case n.turn <- struct{}{}:
		return func() { <-n.turn }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the CNI lock: %w", ctx.Err())
	}
}

// cacheDirMu guards libcni.CacheDir. go-cni v1.1.14 has no option for
// libcni's result cache directory and builds its libcni.CNIConfig without
// one, so libcni falls back to that package variable; each CNI call sets
// it to its machine's directory while holding this lock. In an agent
// there is one Network and the lock is never contended; it matters to
// processes (tests) that drive several machines.
var cacheDirMu sync.Mutex

// inMachine runs fn, which calls the plugins through go-cni, with libcni's
// cache in this machine's state dir and, when the machine is not the
// calling process's own network namespace, on a thread inside the
// machine's: the plugins are forked from the calling thread and inherit
// its namespace. The caller holds the network's turn. fn must not start
// goroutines that call plugins (SetupSerially, not Setup).
func (n *Network) inMachine(fn func() error) error {
	cacheDirMu.Lock()
	defer cacheDirMu.Unlock()
	prev := libcni.CacheDir
	libcni.CacheDir = n.cfg.cacheDir()
	defer func() { libcni.CacheDir = prev }()
	if n.cfg.MachineNetNS == "" {
		return fn()
	}
	return netns.Do(n.cfg.MachineNetNS, fn)
}

// podID is what libcni accepts as a container ID; it also keeps the ID a
// single path element in libcni's cache file names.
var podID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func checkPodID(id string) error {
	if !podID.MatchString(id) {
		return fmt.Errorf("pod id %q: want letters, digits, _ . - only, not starting with _ . -", id)
	}
	return nil
}

// cniArgs turns labels into CNI_ARGS. IgnoreUnknown keeps plugins from
// refusing keys they do not know; ';' and '=' would break the encoding.
func cniArgs(labels map[string]string) ([]gocni.NamespaceOpts, error) {
	keys := make([]string, 0, len(labels))
	for k, v := range labels {
		if k == "" || strings.ContainsAny(k, ";=") || strings.ContainsAny(v, ";=") {
			return nil, fmt.Errorf("label %q cannot be passed to the plugins (empty key, or ';' or '=' in it)", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	opts := []gocni.NamespaceOpts{gocni.WithArgs("IgnoreUnknown", "1")}
	for _, k := range keys {
		opts = append(opts, gocni.WithArgs(k, labels[k]))
	}
	return opts, nil
}

// Attach connects the network namespace at netnsPath to the machine's
// bridge as the pod podID and returns its addresses. Labels reach the
// plugins as CNI_ARGS (K8S_POD_NAME and the like). If the plugins fail,
// whatever they did is undone before Attach returns. A pod that is
// attached already is detached first, so a repeated Attach converges (with
// a new address); netnsPath must be the pod's own namespace.
func (n *Network) Attach(ctx context.Context, podID, netnsPath string, labels map[string]string) (Attachment, error) {
	att, err := n.attach(ctx, podID, netnsPath, labels)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach pod %s: %w", podID, err)
	}
	return att, nil
}

func (n *Network) attach(ctx context.Context, podID, netnsPath string, labels map[string]string) (Attachment, error) {
	if err := checkPodID(podID); err != nil {
		return Attachment{}, err
	}
	if netnsPath == "" {
		return Attachment{}, errors.New("no network namespace path")
	}
	opts, err := cniArgs(labels)
	if err != nil {
		return Attachment{}, err
	}
	release, err := n.acquire(ctx)
	if err != nil {
		return Attachment{}, err
	}
	defer release()
	start := time.Now()
	// A pod attached before (an agent that died before it recorded the
	// result, and tries again) would fail on the eth0 it already has, and
	// a pod moved to a new namespace would keep an address for its old
	// one: DEL it first, with the namespace it was attached in.
	if prev, ok := n.cachedNetNS(podID); ok {
		if err := n.del(ctx, podID, prev); err != nil {
			return Attachment{}, fmt.Errorf("detach earlier attachment: %w", err)
		}
	}
	var res *gocni.Result
	err = n.inMachine(func() error {
		var err error
		res, err = n.cni.SetupSerially(ctx, podID, netnsPath, opts...)
		return err
	})
	var att Attachment
	if err == nil {
		att, err = attachment(res)
	}
	if err != nil {
		// ADD does not undo itself across plugins: DEL whatever address
		// or veth the failed call left.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if derr := n.inMachine(func() error { return n.cni.Remove(dctx, podID, netnsPath, opts...) }); derr != nil {
			n.log.Warn("undo failed attach", "pod", podID, "err", derr)
		}
		return Attachment{}, err
	}
	n.log.Debug("pod attached", "pod", podID, "ips", att.IPs, "duration", time.Since(start))
	return att, nil
}

// attachment picks the pod interface's addresses out of the plugins'
// results (the bridge's result also lists the bridge and the host veth).
func attachment(res *gocni.Result) (Attachment, error) {
	a := Attachment{Interface: PodInterface}
	for _, r := range res.Raw() {
		for _, ip := range r.IPs {
			if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(r.Interfaces) {
				continue
			}
			ifc := r.Interfaces[*ip.Interface]
			if ifc.Name != PodInterface || ifc.Sandbox == "" {
				continue
			}
			addr, ok := netip.AddrFromSlice(ip.Address.IP)
			if !ok {
				continue
			}
			ones, _ := ip.Address.Mask.Size()
			a.IPs = append(a.IPs, netip.PrefixFrom(addr.Unmap(), ones))
			a.MAC = ifc.Mac
			if gw, ok := netip.AddrFromSlice(ip.Gateway); ok && !a.Gateway.IsValid() {
				a.Gateway = gw.Unmap()
			}
		}
	}
	if len(a.IPs) == 0 {
		return Attachment{}, fmt.Errorf("the plugins returned no address for %s", PodInterface)
	}
	return a, nil
}

// Detach runs CNI DEL for the pod podID: its address goes back to the pool
// and its veth is removed. It is idempotent, and succeeds when the
// namespace at netnsPath is already gone (the plugins then only release
// the address), so teardown can always call it.
func (n *Network) Detach(ctx context.Context, podID, netnsPath string) error {
	if err := checkPodID(podID); err != nil {
		return fmt.Errorf("detach pod %s: %w", podID, err)
	}
	release, err := n.acquire(ctx)
	if err != nil {
		return fmt.Errorf("detach pod %s: %w", podID, err)
	}
	defer release()
	if err := n.del(ctx, podID, netnsPath); err != nil {
		return fmt.Errorf("detach pod %s: %w", podID, err)
	}
	return nil
}

// del runs CNI DEL; the caller holds the turn. A path that no longer
// exists is passed on (the plugins take it as gone); a file at the path
// with no namespace mounted on it (left by a reboot) would make them fail,
// so DEL runs without a namespace then, which the spec allows for
// best-effort cleanup.
func (n *Network) del(ctx context.Context, podID, netnsPath string) error {
	if netnsPath != "" && !netns.IsMounted(netnsPath) {
		if _, err := os.Lstat(netnsPath); err == nil {
			netnsPath = ""
		}
	}
	start := time.Now()
	opts, _ := cniArgs(nil)
	if err := n.inMachine(func() error { return n.cni.Remove(ctx, podID, netnsPath, opts...) }); err != nil {
		return err
	}
	n.log.Debug("pod detached", "pod", podID, "duration", time.Since(start))
	return nil
}
