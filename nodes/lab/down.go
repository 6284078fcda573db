package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Option configures Down and Status.
type Option func(*config)

type config struct {
	log *slog.Logger
}

// WithLogger sends progress to l.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

func configure(opts []Option) config {
	c := config{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Removed is what Down removed.
type Removed struct {
	Processes  int
	Namespaces []string
	Links      []string
	Mounts     int
	// Dir is set when the lab directory was removed.
	Dir  bool
	Took time.Duration
}

// stopGrace is how long the lab's processes get to end after SIGTERM.
const stopGrace = 5 * time.Second

// Down removes the lab in dir and everything it made: processes (SIGTERM,
// then SIGKILL), containerd's leftovers (shims, containers, runc state,
// cgroups, mounts), namespaces, links, routes and files. It works from
// dir/lab.json, and from the lab's naming conventions when that is missing
// or corrupt, so it cleans up after a crash or a half-finished Up. A lab
// that is not there is not an error: a second Down does nothing.
func Down(ctx context.Context, dir string, opts ...Option) (*Removed, error) {
	c := configure(opts)
	dir, err := absDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lab down: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("lab down: %w", ErrNotRoot)
	}
	log := c.log.With("component", "lab", "dir", dir)
	release, err := lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("lab down: %w", err)
	}
	defer release()
	r, err := down(ctx, dir, log)
	if err != nil {
		return r, fmt.Errorf("lab down: %w", err)
	}
	return r, nil
}

// down removes the lab in dir (absolute); the caller holds the host lock.
func down(ctx context.Context, dir string, log *slog.Logger) (*Removed, error) {
	began := time.Now()
	r := &Removed{}
	var errs []error
	fail := func(err error) {
		if err != nil {
			errs = append(errs, err)
			log.Warn("lab down", "err", err)
		}
	}

	st, err := readState(dir)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		st = nil
	case errors.Is(err, errCorrupt):
		log.Warn("lab record unusable; removing the lab by its naming conventions", "err", err)
		st = nil
	default:
		return nil, err
	}

	// What to remove: from the record, else by convention.
	runDir := runDirFor(dir)
	var namespaces, links []string
	var routes []route
	var recorded []process
	var netnsDirMade, netnsMountMade bool
	if st != nil {
		runDir = st.Lab.RunDir
		namespaces, links, routes, recorded = st.Made.Namespaces, st.Made.Links, st.Made.Routes, st.Made.Processes
		netnsDirMade, netnsMountMade = st.Made.NetnsDir, st.Made.NetnsMount
	} else {
		namespaces, links, err = conventionalNetwork(dir)
		fail(err)
	}
	dirs := []string{dir, runDir}

	// 1. Processes: the recorded ones, and whatever names the lab's
	// directories or lives in its namespaces, with all their descendants;
	// again until none is left (one may have forked meanwhile).
	var nsIDs []nsID
	for _, n := range namespaces {
		if id, ok := statNS(filepath.Join(netnsDir, n)); ok {
			nsIDs = append(nsIDs, id)
		}
	}
	for round := 0; round < 3; round++ {
		procs := labProcesses(dirs, nsIDs)
		for _, p := range recorded {
			if p.alive() && !slices.ContainsFunc(procs, func(q process) bool { return q.PID == p.PID }) {
				procs = append(procs, p)
			}
		}
		recorded = nil
		if len(procs) == 0 {
			break
		}
		log.Info("stopping processes", "count", len(procs))
		r.Processes += len(procs)
		fail(stopProcesses(procs, stopGrace))
		if err := ctx.Err(); err != nil {
			return r, errors.Join(append(errs, err)...)
		}
	}

	// 2. containerd's leftovers outside the lab's directories.
	for _, d := range dirs {
		fail(reapContainerd(d))
	}

	// 3. Mounts under the lab's directories (container root filesystems,
	// pods' network namespaces), deepest first.
	mounts, err := mountsUnder(dirs...)
	fail(err)
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			fail(fmt.Errorf("unmount %s: %w", m, err))
			continue
		}
		r.Mounts++
	}

	// 4. Network: namespaces, routes, links.
	for _, n := range namespaces {
		p := filepath.Join(netnsDir, n)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := deleteNetns(p); err != nil {
			fail(err)
			continue
		}
		r.Namespaces = append(r.Namespaces, n)
	}
	removedLinks, err := deleteNetwork(links, routes)
	r.Links = removedLinks
	fail(err)
	if netnsMountMade || netnsDirMade {
		if ents, err := os.ReadDir(netnsDir); err == nil && len(ents) == 0 {
			if netnsMountMade {
				fail(ignoreEINVAL(unix.Unmount(netnsDir, unix.MNT_DETACH)))
			}
			if netnsDirMade {
				os.Remove(netnsDir)
			}
		}
	}

	// 5. Files: the run directory if it lies outside dir, then dir, its
	// record last. Nothing is removed while a mount is left under it.
	if runDir != filepath.Join(dir, "run") {
		fail(removeTree(runDir))
	}
	removed, err := removeLabDir(dir)
	r.Dir = removed
	fail(err)

	r.Took = time.Since(began)
	if len(errs) == 0 {
		log.Info("lab down", "took", r.Took.Round(time.Millisecond), "processes", r.Processes, "namespaces", len(r.Namespaces), "links", len(r.Links))
	}
	return r, errors.Join(errs...)
}

func ignoreEINVAL(err error) error {
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// conventionalNetwork finds the lab's namespaces and links by name, unless
// the bridge says it belongs to a lab in another directory that is still
// recorded there.
func conventionalNetwork(dir string) (namespaces, links []string, err error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	all, err := linkList(h)
	if err != nil {
		return nil, nil, err
	}
	for _, l := range all {
		a := l.Attrs()
		if a.Name == BridgeName && a.Alias != "" && a.Alias != bridgeAlias(dir) {
			other, _ := strings.CutPrefix(a.Alias, "berth lab ")
			if _, err := readState(other); err == nil {
				// Another directory's lab, alive and recorded: not ours.
				return nil, nil, nil
			}
		}
	}
	for _, l := range all {
		if strings.HasPrefix(l.Attrs().Name, Prefix) {
			links = append(links, l.Attrs().Name)
		}
	}
	names, _ := filepath.Glob(filepath.Join(netnsDir, Prefix+"*"))
	for _, n := range names {
		namespaces = append(namespaces, filepath.Base(n))
	}
	return namespaces, links, nil
}

// deleteNetwork removes host routes, then links (the machines' ends of
// their veth pairs go with the host ends), and returns the links removed.
func deleteNetwork(links []string, routes []route) ([]string, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	var errs []error
	for _, rt := range routes {
		dst, err1 := netip.ParsePrefix(rt.Dst)
		gw, err2 := netip.ParseAddr(rt.Gw)
		if err1 != nil || err2 != nil {
			continue
		}
		err := h.RouteDel(&netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()})
		if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", rt.Dst, rt.Gw, err))
		}
	}
	var removed []string
	// Ports before the bridge.
	sorted := slices.Clone(links)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[j] == BridgeName && sorted[i] != BridgeName })
	for _, name := range sorted {
		l, err := h.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
				continue
			}
			errs = append(errs, fmt.Errorf("find link %s: %w", name, err))
			continue
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// mountsUnder lists the mount points at or under any of dirs in this
// process's mount namespace, deepest (and latest) first.
func mountsUnder(dirs ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				out = append(out, mp)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	slices.Reverse(out)
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeTree removes path and everything under it, but refuses while
// anything is mounted under it: removing through a leftover bind mount
// would delete files outside the lab.
func removeTree(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if m, err := mountsUnder(path); err != nil {
		return err
	} else if len(m) > 0 {
		return fmt.Errorf("not removing %s: %d mounts left under it (%s)", path, len(m), m[0])
	}
	return os.RemoveAll(path)
}

// labEntry matches the names Up creates in a lab directory.
var labEntry = regexp.MustCompile(`^(lab\d+|run|registry|fleet\.git|id_ed25519(\.pub)?|known_hosts|lab\.env|lab\.json(\.tmp)?)$`)

// removeLabDir removes what Up put in dir, the record last, then dir
// itself if nothing else is in it. Files the lab did not make are left,
// and reported.
func removeLabDir(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var foreign []string
	for _, e := range ents {
		switch {
		case e.Name() == stateFile:
		case labEntry.MatchString(e.Name()):
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return false, err
			}
		default:
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		return false, fmt.Errorf("left %s: it holds files the lab did not make: %s", dir, strings.Join(foreign, ", "))
	}
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if err := os.Remove(dir); err != nil {
		return false, err
	}
	return true, nil
}

// defaultRuncRoot is where containerd's runc shim keeps runc's state unless
// a container's runtime options say otherwise (a directory per namespace).
const defaultRuncRoot = "/run/containerd/runc"

// reapContainerd removes what a lab containerd's tasks left outside the
// lab's directories once their processes are gone: each task bundle's runc
// state, its shim's socket, and its cgroups. Bundles are found under every
// containerd state directory below dir.
func reapContainerd(dir string) error {
	bundles, _ := filepath.Glob(filepath.Join(dir, "lab*", "containerd", "state", "io.containerd.runtime.v2.task", "*", "*"))
	var errs []error
	for _, b := range bundles {
		ns, id := filepath.Base(filepath.Dir(b)), filepath.Base(b)
		root := filepath.Join(runcRoot(b), ns)
		if err := os.RemoveAll(filepath.Join(root, id)); err != nil {
			errs = append(errs, err)
		}
		os.Remove(root) // only when no other container is left in it
		if addr, err := os.ReadFile(filepath.Join(b, "address")); err == nil {
			sock := strings.TrimPrefix(strings.TrimSpace(string(addr)), "unix://")
			if strings.HasPrefix(sock, "/run/containerd/s/") {
				os.Remove(sock)
			}
		}
		if cg := bundleCgroup(b); cg != "" {
			removeCgroup(cg)
		}
	}
	// Tasks deleted cleanly (the agent's pods stopped before the lab goes)
	// leave no bundle, but runc's per-namespace directory stays: remove the
	// lab's namespaces' ones when empty (os.Remove leaves any other).
	for i := 1; i <= MaxNodes; i++ {
		os.Remove(filepath.Join(defaultRuncRoot, Namespace(i)))
	}
	return errors.Join(errs...)
}

// runcRoot is the runc root a task bundle's shim uses: from the runtime
// options the shim saved, else the default.
func runcRoot(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "options.json"))
	if err != nil {
		return defaultRuncRoot
	}
	var opts struct {
		Root string `json:"root"`
	}
	if json.Unmarshal(b, &opts) != nil || opts.Root == "" || !filepath.IsAbs(opts.Root) {
		return defaultRuncRoot
	}
	return filepath.Clean(opts.Root)
}

// bundleCgroup is the cgroup path of a task bundle's OCI spec ("" when it
// has none, or uses systemd's slice:prefix:name form).
func bundleCgroup(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return ""
	}
	var spec struct {
		Linux struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return ""
	}
	p := spec.Linux.CgroupsPath
	if !strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
		return ""
	}
	return filepath.Clean(p)
}

// removeCgroup removes a container's cgroup directories (empty once its
// processes are gone) in every hierarchy, and then its parent if that is
// left empty (containerd's /NAMESPACE level).
func removeCgroup(p string) {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup")
	for _, h := range hierarchies {
		if unix.Rmdir(filepath.Join(h, p)) == nil {
			if parent := filepath.Dir(p); parent != "/" {
				unix.Rmdir(filepath.Join(h, parent))
			}
		}
	}
}
