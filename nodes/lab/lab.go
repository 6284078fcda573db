package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"berth.dev/berth/examples/images"
)

// ErrNotRoot is returned when the lab is asked to change the host without
// root.
var ErrNotRoot = errors.New("lab needs root")

// binaries are the Debian programs a lab runs, with their packages.
var binaries = []struct{ name, pkg string }{
	{"sshd", "openssh-server"},
	{ContainerdBinary, "containerd"},
	{"containerd-shim-runc-v2", "containerd"},
	{"runc", "runc"},
	{RegistryBinary, "docker-registry"},
}

// Missing lists the programs a lab needs that this host lacks, each with the
// Debian package that installs it ("docker-registry (docker-registry)").
func Missing() []string {
	var out []string
	for _, b := range binaries {
		if b.name == "sshd" {
			if _, err := os.Stat(SSHDBinary); err != nil {
				out = append(out, SSHDBinary+" ("+b.pkg+")")
			}
			continue
		}
		if _, err := lookPath(b.name); err != nil {
			out = append(out, b.name+" ("+b.pkg+")")
		}
	}
	return out
}

// Up makes a lab of opts.Nodes machines in opts.Dir (see the package
// documentation) and returns where everything is. It refuses with ErrExists
// when a lab is already up on the host (unless opts.Wait), and with
// ErrAddressInUse when something else uses 198.18.0.0/15. If it fails or
// ctx ends half-way, it removes what it made before returning; if the
// process dies half-way, Down removes it.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	dir, err := absDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("lab up: %w", ErrNotRoot)
	}
	if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("lab up: missing %s", strings.Join(m, ", "))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "lab", "dir", dir)

	// What comes from the source tree is checked before anything is made.
	qs := opts.Quickstart
	if qs == nil {
		if qs, err = findQuickstart(); err != nil {
			return nil, fmt.Errorf("lab up: %w", err)
		}
	}
	example, err := readExample(qs)
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	if !opts.SkipImages {
		if _, err := exec.LookPath("go"); err != nil {
			return nil, fmt.Errorf("lab up: building the echo images needs a Go toolchain on PATH (or skip the images): %w", err)
		}
		if _, err := os.Stat(images.BusyboxPath); err != nil {
			return nil, fmt.Errorf("lab up: building the echo images needs %s (Debian package busybox-static), or skip the images", images.BusyboxPath)
		}
	}

	release, err := lockHost(ctx, dir, opts.Wait, log)
	if err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	defer release()

	began := time.Now()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	u := &upper{
		opts:    opts,
		example: example,
		lab:     layout(dir, opts.Nodes),
		log:     log,
	}
	owner := process{Name: "lab up", PID: os.Getpid()}
	owner.Start, _ = startTime(owner.PID)
	u.j = &journal{path: filepath.Join(dir, stateFile), st: state{Version: stateVersion, Started: began, Owner: owner, Lab: u.lab}}
	if err := u.j.record(func(*state) {}); err != nil {
		os.Remove(dir) // only if still empty
		return nil, fmt.Errorf("lab up: %w", err)
	}
	log.Info("lab up", "nodes", opts.Nodes)
	if err := u.up(ctx); err != nil {
		log.Error("lab up failed; removing what it made", "err", err)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if _, derr := down(cctx, dir, log); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", derr))
		}
		return nil, fmt.Errorf("lab up: %w", err)
	}
	took := time.Since(began)
	if err := u.j.record(func(s *state) {
		s.Ready = time.Now()
		s.UpSeconds = took.Seconds()
	}); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	log.Info("lab ready", "took", took.Round(time.Millisecond))
	return u.lab, nil
}

// lockHost takes the host lock once the host is free for a lab in dir:
// dir holds no lab and is empty, no other lab is up (or, with wait, once
// the other lab is gone), and the lab's addresses are unused.
func lockHost(ctx context.Context, dir string, wait bool, log *slog.Logger) (release func(), err error) {
	waiting := false
	for {
		release, err := lock(ctx)
		if err != nil {
			return nil, err
		}
		err = checkFree(dir)
		if err == nil {
			return release, nil
		}
		release()
		if !wait || !errors.Is(err, ErrExists) || errors.Is(err, errHere) {
			return nil, err
		}
		if !waiting {
			log.Info("waiting for the other lab to go", "reason", err)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; gave up waiting: %w", err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errHere marks an ErrExists for a lab in the very directory asked for.
var errHere = errors.New("in this directory")

// checkFree checks that a lab can be made in dir.
func checkFree(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return fmt.Errorf("%w %w %s (run lab down first)", ErrExists, errHere, dir)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return checkHost(dir)
}

// upper makes one lab.
type upper struct {
	opts    Options
	example map[string][]byte // the example fleet's files
	lab     *Lab
	j       *journal
	log     *slog.Logger
}

// start starts a daemon and records it.
func (u *upper) start(name, netns, logPath, path string, args ...string) (*daemon, error) {
	d, err := startDaemon(name, netns, logPath, path, args...)
	if err != nil {
		return nil, err
	}
	if err := u.j.record(func(s *state) { s.Made.Processes = append(s.Made.Processes, d.proc) }); err != nil {
		return nil, err
	}
	u.log.Debug("started", "daemon", name, "pid", d.proc.PID)
	return d, nil
}

func (u *upper) up(ctx context.Context) error {
	l := u.lab
	if l.RunDir != filepath.Join(l.Dir, "run") {
		if err := u.j.record(func(s *state) { s.Made.RunDir = l.RunDir }); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(l.RunDir, 0o755); err != nil {
		return err
	}

	// Keys and configuration files.
	clientKey, err := writeKey(l.SSHKey, "berth-lab")
	if err != nil {
		return fmt.Errorf("client key: %w", err)
	}
	for i := range l.Machines {
		if l.Machines[i].HostKey, err = machineFiles(l.Machines[i], clientKey); err != nil {
			return fmt.Errorf("%s: %w", l.Machines[i].Name, err)
		}
	}
	if err := u.j.record(func(s *state) {}); err != nil {
		return err
	}
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		return fmt.Errorf("sshd privilege separation directory: %w", err)
	}

	// Network.
	madeDir, madeMount, err := prepareNetnsDir()
	if rerr := u.j.record(func(s *state) { s.Made.NetnsDir, s.Made.NetnsMount = madeDir, madeMount }); err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := u.network(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	u.log.Info("network ready", "bridge", l.Bridge, "machines", len(l.Machines))

	// The registry and its images go on while the machines start; a
	// machine that fails stops them.
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var regErr error
	wg.Go(func() { regErr = u.registryAndImages(rctx) })

	err = u.machines(ctx)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = u.fleet()
	}
	if err != nil {
		stop()
	}
	wg.Wait()
	if err != nil {
		return err
	}
	return regErr
}

// machines starts every machine's sshd and containerd inside its namespace
// and waits until they all answer.
func (u *upper) machines(ctx context.Context) error {
	containerd, err := lookPath(ContainerdBinary)
	if err != nil {
		return err
	}
	type started struct {
		m          Machine
		sshd, ctrd *daemon
	}
	var all []started
	for _, m := range u.lab.Machines {
		sshd, err := u.start("sshd-"+m.Name, m.NetnsPath, filepath.Join(m.Dir, "sshd.log"),
			SSHDBinary, "-D", "-e", "-f", m.SSHDConfig)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		ctrd, err := u.start("containerd-"+m.Name, m.NetnsPath, m.Containerd.Log,
			containerd, "--config", m.Containerd.Config)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		all = append(all, started{m, sshd, ctrd})
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	errs := make([]error, 2*len(all))
	var wg sync.WaitGroup
	for i, s := range all {
		wg.Go(func() {
			if err := waitSSH(wctx, s.m.SSHAddr(), s.sshd); err != nil {
				errs[2*i] = fmt.Errorf("%s: %w", s.m.Name, err)
			}
		})
		wg.Go(func() {
			if err := waitContainerd(wctx, s.m.Containerd.Address, s.ctrd); err != nil {
				errs[2*i+1] = fmt.Errorf("%s: %w", s.m.Name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	u.log.Info("machines ready")
	return nil
}

// registryAndImages starts the registry and pushes the echo images.
func (u *upper) registryAndImages(ctx context.Context) error {
	if err := u.registry(ctx); err != nil {
		return err
	}
	if u.opts.SkipImages {
		return nil
	}
	pushed, err := images.PushEcho(ctx, u.lab.Registry, true, EchoVersions...)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	var refs []string
	for _, p := range pushed {
		refs = append(refs, p.Ref)
		u.log.Info("pushed", "image", p.Ref, "digest", p.Digest.String())
	}
	return u.j.record(func(s *state) { s.Lab.Images = refs })
}
