// Package network applies the Network the controller sets on one machine
// (api.Network, PUT /v1/network): it makes the pod bridge with the
// gateway address and hands the runtime a CNI network for new sandboxes
// (nodes/cni), sets the host-gw routes to the other machines' pod CIDRs,
// writes the Service routing and NetworkPolicies into berth's nftables
// table (nodes/nft), serves the cluster DNS on the pod gateway
// (nodes/dns), and holds the LoadBalancer addresses the machine was given.
//
// It implements agent.NetworkApplier: each Apply gets the whole Network
// and converges; a step that fails leaves what it applied before and the
// others still run. What it owns on the machine: the bridge and its
// gateway address, the routes and the nftables table the packages above
// own, the DNS server's sockets, and the held addresses it added (recorded
// under its state directory). Closing an Applier stops the DNS server and
// leaves the rest in place, so that pods keep their network while no agent
// runs.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/cni"
	"berth.dev/berth/nodes/dns"
	"berth.dev/berth/nodes/nft"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/nodes/runtime/netns"
)

// DefaultDNSPort is where the cluster DNS answers on the pod gateway.
const DefaultDNSPort = 53

// PodNetworker is the runtime's side: how new sandboxes are networked.
type PodNetworker interface {
	SetPodNetwork(ctx context.Context, pn runtime.PodNetwork) error
}

// Options configure an Applier.
type Options struct {
	// Pods is the runtime whose sandboxes join the pod network. Required.
	Pods PodNetworker
	// StateDir holds the CNI state (StateDir/cni) and the record of held
	// addresses. Required, absolute; one per machine.
	StateDir string
	// MachineNetNS is the path of the machine's network namespace; empty
	// is the calling process's own, where an agent runs.
	MachineNetNS string
	// Bridge names the pod bridge (cni.DefaultBridge when empty).
	Bridge string
	// PluginDir holds the CNI plugins (cni.DefaultPluginDir when empty).
	PluginDir string
	// Table is berth's nftables table (nft.DefaultTable when empty).
	Table string
	// DNSPort is the cluster DNS's port on the gateway (DefaultDNSPort
	// when zero).
	DNSPort int
	// ResolvConf is the machine's resolv.conf, whose nameservers the
	// cluster DNS forwards to when the Network names no upstreams
	// (dns.DefaultResolvConf when empty).
	ResolvConf string
	// Logger; discarded when nil.
	Logger *slog.Logger
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Pods == nil:
		return errors.New("network options: Pods is required")
	case !filepath.IsAbs(o.StateDir):
		return fmt.Errorf("network options: StateDir %q is not an absolute path", o.StateDir)
	case o.MachineNetNS != "" && !filepath.IsAbs(o.MachineNetNS):
		return fmt.Errorf("network options: MachineNetNS %q is not an absolute path", o.MachineNetNS)
	case o.DNSPort < 0 || o.DNSPort > 65535:
		return fmt.Errorf("network options: DNSPort %d out of range", o.DNSPort)
	}
	return nil
}

// Applier applies Networks on one machine. Apply calls are serialized.
type Applier struct {
	opts Options
	log  *slog.Logger
	nft  *nft.Syncer
	ns   *os.File // the machine's namespace, for the nftables connection

	mu   sync.Mutex
	cni  *cni.Network // for the current pod CIDR
	cidr netip.Prefix
	dns  *dnsRunner
	// announced are the held addresses announced since New.
	announced map[netip.Addr]bool
	closed    bool
}

// New opens the nftables connection; nothing changes on the machine until
// the first Apply.
func New(o Options) (*Applier, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Bridge == "" {
		o.Bridge = cni.DefaultBridge
	}
	if o.DNSPort == 0 {
		o.DNSPort = DefaultDNSPort
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Applier{opts: o, log: o.Logger.With("component", "network"), announced: map[netip.Addr]bool{}}
	nopts := nft.Options{Table: o.Table, Logger: o.Logger}
	if o.MachineNetNS != "" {
		f, err := os.Open(o.MachineNetNS)
		if err != nil {
			return nil, fmt.Errorf("network: machine namespace: %w", err)
		}
		a.ns = f
		nopts.NetNS = int(f.Fd())
	}
	s, err := nft.NewSyncer(nopts)
	if err != nil {
		a.closeNS()
		return nil, fmt.Errorf("network: %w", err)
	}
	a.nft = s
	return a, nil
}

func (a *Applier) closeNS() {
	if a.ns != nil {
		a.ns.Close()
	}
}

// Close stops the DNS server and closes the nftables connection. The
// bridge, routes, rules and held addresses stay.
func (a *Applier) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	var errs []error
	if a.dns != nil {
		errs = append(errs, a.dns.stop())
		a.dns = nil
	}
	errs = append(errs, a.nft.Close())
	a.closeNS()
	return errors.Join(errs...)
}

// Apply makes the machine's networking what n says. The steps run in
// order — pod network, routes, Services and policies, DNS, the runtime's
// sandboxes, held addresses — and each one that fails leaves what it
// applied before; their errors are joined.
func (a *Applier) Apply(ctx context.Context, n api.Network) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("network applier closed")
	}
	var errs []error
	step := func(what string, err error) bool {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		return err == nil
	}

	podNet := step("pod network", a.ensurePodNetwork(n.PodCIDR))
	step("routes", cni.SetRoutes(a.opts.MachineNetNS, cniRoutes(&n)))
	step("services", a.nft.Sync(ctx, nftDesired(&n)))

	pn := runtime.PodNetwork{Domain: n.DNS.Domain}
	if a.cni != nil {
		pn.CNI = a.cni
		gw := a.cni.Config().Gateway()
		if step("dns", a.ensureDNS(gw, &n)) {
			pn.DNS = gw
		}
	} else {
		step("dns", a.stopDNS())
	}
	if podNet {
		step("pods", a.opts.Pods.SetPodNetwork(ctx, pn))
	}
	step("held addresses", a.setHeld(n.NodeIPs, n.HeldIPs))
	return errors.Join(errs...)
}

// ensurePodNetwork makes the bridge with the gateway address of cidr and
// the CNI network that attaches pods to it; an invalid cidr means no pod
// network (pods get loopback only).
func (a *Applier) ensurePodNetwork(cidr netip.Prefix) error {
	if cidr == a.cidr && (a.cni != nil || !cidr.IsValid()) {
		return nil
	}
	if !cidr.IsValid() {
		a.log.Warn("pod CIDR removed: new pods get loopback only", "was", a.cidr)
		a.cni, a.cidr = nil, cidr
		return nil
	}
	cfg := cni.Config{
		PodCIDR:      cidr,
		StateDir:     filepath.Join(a.opts.StateDir, "cni"),
		Bridge:       a.opts.Bridge,
		PluginDir:    a.opts.PluginDir,
		MachineNetNS: a.opts.MachineNetNS,
		Logger:       a.opts.Logger,
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var old netip.Prefix
	if a.cni != nil {
		old = netip.PrefixFrom(a.cni.Config().Gateway(), a.cidr.Bits())
	}
	if err := ensureBridge(a.opts.MachineNetNS, a.opts.Bridge, netip.PrefixFrom(cfg.Gateway(), cidr.Bits()), old); err != nil {
		return err
	}
	if err := bridgeNetfilter(a.opts.MachineNetNS); err != nil {
		// Without it, replies from a pod to a pod on the same bridge that
		// reached it through a ClusterIP skip conntrack and are not
		// translated back.
		a.log.Warn("bridged traffic does not pass nftables (br_netfilter); Services between pods of this machine will not work", "err", err)
	}
	n, err := cni.New(cfg)
	if err != nil {
		return err
	}
	a.log.Info("pod network", "cidr", cidr, "gateway", cfg.Gateway(), "bridge", a.opts.Bridge)
	a.cni, a.cidr = n, cidr
	return nil
}

// dnsRunner is a running DNS server and what it was started with.
type dnsRunner struct {
	srv       *dns.Server
	listen    string
	upstreams []string
	cancel    context.CancelFunc
	done      chan error
}

func (d *dnsRunner) stop() error {
	d.cancel()
	return <-d.done
}

// ensureDNS serves n's records on gw, starting (or restarting, when the
// address or upstreams changed) the server.
func (a *Applier) ensureDNS(gw netip.Addr, n *api.Network) error {
	view, err := dns.NewView(dnsInput(n, gw))
	if err != nil {
		return err
	}
	for _, p := range view.Problems() {
		a.log.Warn("dns record left out", "problem", p)
	}
	listen := net.JoinHostPort(gw.String(), strconv.Itoa(a.opts.DNSPort))
	if d := a.dns; d != nil && d.listen == listen && slices.Equal(d.upstreams, n.DNS.Upstreams) {
		d.srv.Update(view)
		return nil
	}
	if err := a.stopDNS(); err != nil {
		a.log.Warn("dns server stopped with an error", "err", err)
	}
	srv, err := dns.New(dns.Options{
		Listen:     []string{listen},
		Upstreams:  n.DNS.Upstreams,
		ResolvConf: a.opts.ResolvConf,
		View:       view,
		Logger:     a.opts.Logger,
	})
	if err != nil {
		return err
	}
	listenIn := srv.Listen
	if a.opts.MachineNetNS != "" {
		listenIn = func() error { return netns.Do(a.opts.MachineNetNS, srv.Listen) }
	}
	if err := listenIn(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dnsRunner{srv: srv, listen: listen, upstreams: slices.Clone(n.DNS.Upstreams), cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- srv.Run(ctx) }()
	a.dns = d
	a.log.Info("cluster dns serving", "listen", listen, "upstreams", srv.Upstreams(), "domain", view.Domain())
	return nil
}

func (a *Applier) stopDNS() error {
	if a.dns == nil {
		return nil
	}
	err := a.dns.stop()
	a.dns = nil
	return err
}

// DNSAddrs are the addresses the cluster DNS listens on (none while no pod
// network is set).
func (a *Applier) DNSAddrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dns == nil {
		return nil
	}
	return a.dns.srv.Addrs()
}
