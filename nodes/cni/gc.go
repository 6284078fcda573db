package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/runtime/netns"
)

// Allocation is one address host-local handed out.
type Allocation struct {
	IP        netip.Addr
	PodID     string
	Interface string
}

// Allocations lists the addresses host-local has handed out on this
// machine, by address.
func (n *Network) Allocations() ([]Allocation, error) {
	var allocs []Allocation
	err := n.withIPAMLock(func() error {
		var err error
		allocs, err = n.readAllocations()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list pod addresses: %w", err)
	}
	return allocs, nil
}

// withIPAMLock runs fn holding host-local's lock on its data dir (flock on
// the file "lock" in it), so that no plugin writes there meanwhile.
func (n *Network) withIPAMLock(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(n.cfg.allocDir(), "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("host-local lock: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("host-local lock: %w", err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// readAllocations reads host-local's files: one per address, named by the
// address, holding "ID\r\nIFNAME" (older versions: only the ID). Other
// files (lock, last_reserved_ip.N) are not addresses.
func (n *Network) readAllocations() ([]Allocation, error) {
	var allocs []Allocation
	err := readFiles(n.cfg.allocDir(), func(name string, b []byte) {
		ip, err := netip.ParseAddr(name)
		if err != nil {
			return
		}
		id, ifname, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		allocs = append(allocs, Allocation{IP: ip, PodID: strings.TrimSpace(id), Interface: strings.TrimSpace(ifname)})
	})
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].IP.Less(allocs[j].IP) })
	return allocs, err
}

// cacheEntry is the part of a libcni result cache file GC needs.
type cacheEntry struct {
	file        string
	ContainerID string `json:"containerId"`
	NetworkName string `json:"networkName"`
	NetNS       string `json:"netns"`
}

// cachedResults reads libcni's result cache (cache/results/NET-ID-IF, JSON).
func (n *Network) cachedResults() ([]cacheEntry, error) {
	dir := filepath.Join(n.cfg.cacheDir(), "results")
	var out []cacheEntry
	err := readFiles(dir, func(name string, b []byte) {
		c := cacheEntry{file: filepath.Join(dir, name)}
		if err := json.Unmarshal(b, &c); err != nil || c.ContainerID == "" {
			// Not libcni's: a torn write, or something else. Left alone.
			n.log.Warn("unreadable CNI cache entry", "file", c.file)
			return
		}
		out = append(out, c)
	})
	return out, err
}

// readFiles calls fn with the name and content of each regular file in
// dir. A missing dir, or a file removed meanwhile, is not an error.
func readFiles(dir string, fn func(name string, b []byte)) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		fn(e.Name(), b)
	}
	return nil
}

// cachedNetNS reports whether libcni has a cached result of the bridge
// network for podID, and the namespace path it was attached with.
func (n *Network) cachedNetNS(podID string) (string, bool) {
	file := filepath.Join(n.cfg.cacheDir(), "results", n.cfg.NetworkName+"-"+podID+"-"+PodInterface)
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false
	}
	var c cacheEntry
	if err := json.Unmarshal(b, &c); err != nil || c.ContainerID != podID {
		return "", false
	}
	return c.NetNS, true
}

// GC releases what the plugins hold for pods that are not live: host-local
// addresses and libcni's cached results. For each such pod it runs CNI DEL
// (with the pod's namespace when the cache names one still mounted, so its
// veth goes too); whatever DEL leaves is removed directly, the addresses
// under host-local's lock. It returns the pods it collected.
//
// live must answer true for every pod that is attached or may be attached
// while GC runs: GC waits for attaches already started, but a pod the
// caller attaches after deciding what is live would be collected.
func (n *Network) GC(ctx context.Context, live func(podID string) bool) ([]string, error) {
	release, err := n.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("collect pod addresses: %w", err)
	}
	defer release()
	allocs, cached, err := n.holdings()
	if err != nil {
		return nil, fmt.Errorf("collect pod addresses: %w", err)
	}
	leaked := map[string]string{} // pod id -> network namespace path
	for _, a := range allocs {
		if a.PodID != "" && !live(a.PodID) {
			leaked[a.PodID] = ""
		}
	}
	for _, c := range cached {
		if live(c.ContainerID) {
			continue
		}
		if c.NetworkName == n.cfg.NetworkName && c.NetNS != "" && netns.IsMounted(c.NetNS) {
			leaked[c.ContainerID] = c.NetNS
		} else if _, ok := leaked[c.ContainerID]; !ok {
			leaked[c.ContainerID] = ""
		}
	}
	ids := make([]string, 0, len(leaked))
	for id := range leaked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		var ips []netip.Addr
		for _, a := range allocs {
			if a.PodID == id {
				ips = append(ips, a.IP)
			}
		}
		if err := n.collect(ctx, id, leaked[id]); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", id, err))
			continue
		}
		n.log.Info("collected leaked pod network", "pod", id, "ips", ips)
	}
	if err := errors.Join(errs...); err != nil {
		return ids, fmt.Errorf("collect pod addresses: %w", err)
	}
	return ids, nil
}

func (n *Network) holdings() ([]Allocation, []cacheEntry, error) {
	var allocs []Allocation
	if err := n.withIPAMLock(func() error {
		var err error
		allocs, err = n.readAllocations()
		return err
	}); err != nil {
		return nil, nil, err
	}
	cached, err := n.cachedResults()
	if err != nil {
		return nil, nil, err
	}
	return allocs, cached, nil
}

// collect releases pod id's holdings: CNI DEL first, then removal of what
// DEL left behind (DEL may fail, or an allocation may carry an interface
// name DEL does not match). Only the second step failing is an error.
func (n *Network) collect(ctx context.Context, id, netnsPath string) error {
	if err := n.del(ctx, id, netnsPath); err != nil {
		n.log.Warn("CNI DEL of leaked pod failed; removing its state directly", "pod", id, "err", err)
	}
	var errs []error
	err := n.withIPAMLock(func() error {
		allocs, err := n.readAllocations()
		if err != nil {
			return err
		}
		for _, a := range allocs {
			if a.PodID != id {
				continue
			}
			if err := os.Remove(filepath.Join(n.cfg.allocDir(), a.IP.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("release address: %w", err))
	}
	cached, err := n.cachedResults()
	if err != nil {
		errs = append(errs, fmt.Errorf("read CNI cache: %w", err))
	}
	for _, c := range cached {
		if c.ContainerID != id {
			continue
		}
		if err := os.Remove(c.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove CNI cache entry: %w", err))
		}
	}
	return errors.Join(errs...)
}
