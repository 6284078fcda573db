package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/gitsource"
	"berth.dev/berth/nodes/lab"
	"berth.dev/berth/nodes/lab/labtest"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

func TestLabEndToEnd(t *testing.T) {
	ctx := context.Background()
	began := time.Now()
	l := labtest.Start(t, lab.Options{Nodes: 2})
	t.Logf("timing: lab up with 2 machines and the echo images (waits included): %v", time.Since(began))

	signer := labSigner(t, l)
	for _, m := range l.Machines {
		t.Run("machine "+m.Name, func(t *testing.T) {
			out := sshRun(t, m, signer, "ip -4 -o addr show dev eth0; hostname -I; echo $BERTH_LAB_MACHINE; echo HOME=$HOME; ip -6 -o addr show scope global; ip -6 -o addr show scope link")
			for _, want := range []string{m.Address.String(), m.Name, "HOME=" + m.Home()} {
				if !strings.Contains(out, want) {
					t.Errorf("%s says:\n%s\nwant %s in it", m.Name, out, want)
				}
			}
			if strings.Contains(out, "inet6") {
				t.Errorf("%s has IPv6 addresses (lab traffic must stay on 198.18.0.0/15):\n%s", m.Name, out)
			}
			// From inside the machine: the registry on the bridge
			// address holds both echo tags, and every other machine's
			// sshd answers.
			probe := "exec 3<>/dev/tcp/198.18.0.1/5000 && printf 'GET /v2/berth/echo/tags/list HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
			for _, o := range l.Machines {
				if o.Name != m.Name {
					probe += fmt.Sprintf("; (exec 4<>/dev/tcp/%s/22 && head -c 8 <&4 && echo)", o.Address.Addr())
				}
			}
			out = sshRun(t, m, signer, "bash -c "+shellQuote(probe))
			if !strings.Contains(out, `"tags":["1","2"]`) && !strings.Contains(out, `"tags":["2","1"]`) {
				t.Errorf("registry from %s:\n%s", m.Name, out)
			}
			if strings.Count(out, "SSH-2.0") != len(l.Machines)-1 {
				t.Errorf("other machines' sshd from %s:\n%s", m.Name, out)
			}
			// Routes: the default route through the bridge. The other
			// machines' pod CIDRs are the agent's to route (from the
			// Network the controller sets), not the lab's.
			out = sshRun(t, m, signer, "ip -4 route")
			if !strings.Contains(out, "default via 198.18.0.1 dev eth0") {
				t.Errorf("routes of %s:\n%s", m.Name, out)
			}
			for _, o := range l.Machines {
				if o.Name != m.Name && strings.Contains(out, o.PodCIDR.String()+" via ") {
					t.Errorf("the lab routed %s on %s (the agent's job):\n%s", o.PodCIDR, m.Name, out)
				}
			}
			cl, err := client.New(m.Containerd.Address)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			v, err := cl.Version(ctx)
			if err != nil {
				t.Fatalf("containerd: %v", err)
			}
			t.Logf("%s: containerd %s", m.Name, v.Version)
		})
	}

	t.Run("host links", func(t *testing.T) {
		for _, name := range []string{l.Bridge, l.Machines[0].HostLink} {
			link, err := netlink.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if addrs, err := netlink.AddrList(link, netlink.FAMILY_V6); err != nil || len(addrs) > 0 {
				t.Errorf("%s has IPv6 addresses %v (%v)", name, addrs, err)
			}
			if link.Attrs().OperState != netlink.OperUp && name == l.Bridge {
				t.Errorf("%s is %s", name, link.Attrs().OperState)
			}
		}
	})

	t.Run("host routes", func(t *testing.T) {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Machines {
			found := false
			for _, r := range routes {
				if r.Dst != nil && r.Dst.String() == m.PodCIDR.String() && r.Gw.String() == m.Address.Addr().String() {
					found = true
				}
			}
			if !found {
				t.Errorf("no host route to %s via %s", m.PodCIDR, m.Address.Addr())
			}
		}
	})

	// A running container in lab1's containerd, pulled from the lab
	// registry, so that Down has a shim, a runc container, a cgroup and a
	// root filesystem mount to clean up.
	t.Run("container", func(t *testing.T) {
		m := l.Machines[0]
		cl, err := client.New(m.Containerd.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		nctx := namespaces.WithNamespace(ctx, m.Agent.Namespace)
		resolver := docker.NewResolver(docker.ResolverOptions{
			Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
		})
		ref := images.EchoRef(l.Registry, "1")
		began := time.Now()
		img, err := cl.Pull(nctx, ref, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter("overlayfs"))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		t.Logf("timing: pull and unpack %s into %s: %v", ref, m.Name, time.Since(began))
		ctr, err := cl.NewContainer(nctx, "echo", client.WithImage(img), client.WithSnapshotter("overlayfs"),
			client.WithNewSnapshot("echo-rootfs", img), client.WithNewSpec(oci.WithImageConfig(img)))
		if err != nil {
			t.Fatal(err)
		}
		task, err := ctr.NewTask(nctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(nctx); err != nil {
			t.Fatal(err)
		}
		// Left running on purpose.
	})

	t.Run("repository", func(t *testing.T) {
		repo, err := gitsource.Open(ctx, l.Repo)
		if err != nil {
			t.Fatal(err)
		}
		defer repo.Close()
		snap, err := repo.Snapshot(ctx, lab.Branch)
		if err != nil {
			t.Fatal(err)
		}
		checkFleet(t, snap, l)
	})

	t.Run("lab.env and known_hosts", func(t *testing.T) {
		env, err := os.ReadFile(l.Env)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"BERTH_REPO=" + l.Repo, "BERTH_SSH_KEY=" + l.SSHKey, "BERTH_KNOWN_HOSTS=" + l.KnownHosts} {
			if !strings.Contains(string(env), "export "+want+"\n") {
				t.Errorf("lab.env lacks %s:\n%s", want, env)
			}
		}
		if fi, err := os.Stat(l.SSHKey); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("client key: %v %v", fi.Mode(), err)
		}
		cb, err := knownhosts.New(l.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Machines {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
			if err != nil {
				t.Fatal(err)
			}
			addr := &net.TCPAddr{IP: m.Address.Addr().AsSlice(), Port: lab.SSHPort}
			if err := cb(m.SSHAddr(), addr, key); err != nil {
				t.Errorf("known_hosts for %s: %v", m.Name, err)
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		r, err := lab.Status(ctx, l.Dir)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		r.WriteText(&b)
		t.Logf("status:\n%s", b.String())
		if !r.Healthy() || !r.OwnerAlive || r.Owner != os.Getpid() {
			t.Errorf("healthy %v, owner %d alive %v", r.Healthy(), r.Owner, r.OwnerAlive)
		}
		dir, up, err := lab.HostLab()
		if err != nil || !up || dir != l.Dir {
			t.Errorf("HostLab: %q %v %v, want %s", dir, up, err, l.Dir)
		}
	})

	t.Run("up again", func(t *testing.T) {
		_, err := lab.Up(ctx, lab.Options{Nodes: 1, Dir: l.Dir, SkipImages: true})
		if !errors.Is(err, lab.ErrExists) {
			t.Errorf("up on an existing lab: %v, want ErrExists", err)
		}
		_, err = lab.Up(ctx, lab.Options{Nodes: 1, Dir: t.TempDir(), SkipImages: true})
		if !errors.Is(err, lab.ErrExists) {
			t.Errorf("a second lab elsewhere: %v, want ErrExists", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err = lab.Up(wctx, lab.Options{Nodes: 1, Dir: t.TempDir(), SkipImages: true, Wait: true})
		if !errors.Is(err, lab.ErrExists) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("waiting for the lab to go: %v, want ErrExists and a deadline", err)
		}
	})

	began = time.Now()
	r, err := lab.Down(ctx, l.Dir, lab.WithLogger(labtest.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: lab down: %v (removed %d processes, namespaces %v, links %v, %d mounts)", time.Since(began), r.Processes, r.Namespaces, r.Links, r.Mounts)
	assertGone(t, l.Dir, l.RunDir)

	r, err = lab.Down(ctx, l.Dir)
	if err != nil {
		t.Fatalf("second down: %v", err)
	}
	if r.Processes != 0 || len(r.Namespaces) != 0 || len(r.Links) != 0 || r.Mounts != 0 || r.Dir {
		t.Errorf("second down removed %+v", r)
	}
	if _, err := lab.Status(ctx, l.Dir); !errors.Is(err, lab.ErrNotFound) {
		t.Errorf("status after down: %v, want ErrNotFound", err)
	}
}

// labSigner reads the lab's client key.
func labSigner(t *testing.T, l *lab.Lab) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(l.SSHKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sshRun runs cmd on m as root, checking m's pinned host key.
func sshRun(t *testing.T, m lab.Machine, signer ssh.Signer, cmd string) string {
	t.Helper()
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, err := ssh.Dial("tcp", m.SSHAddr(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh %s: %v", m.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("ssh %s %q: %v\n%s", m.Name, cmd, err, out)
	}
	t.Logf("timing: ssh %s (connect, authenticate, run): %v", m.Name, time.Since(began))
	return string(out)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// assertGone checks that nothing of a lab is left: namespaces, links,
// processes, mounts, files, containerd's runc state and cgroups.
func assertGone(t *testing.T, dir, runDir string) {
	t.Helper()
	// The names checked below are the same for every lab: look while no
	// other package's lab is up.
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Timeout)
	defer cancel()
	release, err := lab.HoldHostIdle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if names, _ := filepath.Glob("/run/netns/" + lab.Prefix + "*"); len(names) > 0 {
		t.Errorf("namespaces left: %v", names)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, lab.Prefix) {
			t.Errorf("link left: %s", l.Attrs().Name)
		}
	}
	if procs := lab.ProcessesOf(dir, runDir); len(procs) > 0 {
		t.Errorf("processes left: %v", procs)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, dir) || strings.Contains(line, runDir) || strings.Contains(line, "/run/netns/"+lab.Prefix) {
			t.Errorf("mount left: %s", line)
		}
	}
	for _, p := range []string{dir, runDir} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left (%v)", p, err)
		}
	}
	for i := 1; i <= lab.MaxNodes; i++ {
		ns := lab.Namespace(i)
		left, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
		if _, err := os.Stat(filepath.Join("/run/containerd/runc", ns)); err == nil {
			left = append(left, filepath.Join("/run/containerd/runc", ns))
		}
		if len(left) > 0 {
			t.Errorf("containerd leftovers of %s: %v", ns, left)
		}
	}
}

// TestDownAfterCrash kills the process running Up at two points and checks
// that Down still removes everything.
func TestDownAfterCrash(t *testing.T) {
	labtest.Require(t, false)
	// After how many recorded processes the helper is killed: 0 while the
	// network is being made, 3 while the machines start.
	for _, after := range []int{0, 3} {
		t.Run(fmt.Sprintf("after %d processes", after), func(t *testing.T) {
			labtest.RemoveAbandoned(t)
			dir, err := os.MkdirTemp("", labtest.DirPrefix)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lab.Down(context.Background(), dir); os.RemoveAll(dir) })
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), helperEnv+"="+dir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill it once the record shows enough made.
			deadline := time.Now().Add(labtest.Timeout)
			for {
				links, procs, _, err := lab.Recorded(dir)
				if err == nil && len(links) > 0 && len(procs) >= after {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("helper made too little in time:\n%s", out.String())
				}
				time.Sleep(time.Millisecond)
			}
			cmd.Process.Kill()
			cmd.Wait()
			links, procs, runDir, err := lab.Recorded(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed Up with links %v and processes %v recorded", links, procs)
			// One of its daemons dies too.
			if err := lab.KillRecorded(dir, "sshd-"); err != nil {
				t.Fatal(err)
			}
			r, err := lab.Down(context.Background(), dir, lab.WithLogger(labtest.Logger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("removed %+v", r)
			assertGone(t, dir, runDir)
		})
	}
}

const helperEnv = "BERTH_LAB_TEST_HELPER_DIR"

// TestMain runs Up in place of the tests when the test binary is started as
// the helper that TestDownAfterCrash and TestRemoveAbandoned kill.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		_, err := lab.Up(context.Background(), lab.Options{Nodes: 2, Dir: dir, SkipImages: true, Wait: true, Logger: log})
		log.Info("helper: lab up", "err", err)
		select {} // wait to be killed
	}
	os.Exit(m.Run())
}

// TestRemoveAbandoned leaves a finished lab behind a killed test process:
// the next test's labtest removes it instead of waiting for it forever.
func TestRemoveAbandoned(t *testing.T) {
	labtest.Require(t, false)
	labtest.RemoveAbandoned(t)
	dir, err := os.MkdirTemp("", labtest.DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Down(context.Background(), dir); os.RemoveAll(dir) })
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(labtest.Timeout)
	for {
		if r, err := lab.Status(context.Background(), dir); err == nil && !r.Ready.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper's lab not up in time:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if r, err := lab.Status(context.Background(), dir); err != nil || r.OwnerAlive || !r.Healthy() {
		t.Fatalf("abandoned lab: %+v %v", r, err)
	}
	labtest.RemoveAbandoned(t)
	if _, up, err := lab.HostLab(); up || err != nil {
		t.Errorf("lab still up (%v)", err)
	}
	assertGone(t, dir, filepath.Join(dir, "run"))
}

// TestUpCancelled cancels Up half-way: it must remove what it made.
func TestUpCancelled(t *testing.T) {
	labtest.Require(t, false)
	labtest.RemoveAbandoned(t)
	dir, err := os.MkdirTemp("", labtest.DirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Down(context.Background(), dir); os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, procs, _, err := lab.Recorded(dir); err == nil && len(procs) >= 2 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err = lab.Up(ctx, lab.Options{Nodes: 2, Dir: dir, SkipImages: true, Wait: true, Logger: labtest.Logger(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("up: %v, want context.Canceled", err)
	}
	assertGone(t, dir, filepath.Join(dir, "run"))
}

// TestDownWithoutRecord removes a lab whose lab.json is gone or corrupt,
// by its naming conventions.
func TestDownWithoutRecord(t *testing.T) {
	for _, damage := range []string{"missing", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			l := labtest.Start(t, lab.Options{Nodes: 2, SkipImages: true})
			p := filepath.Join(l.Dir, lab.StateFile)
			var err error
			if damage == "missing" {
				err = os.Remove(p)
			} else {
				err = os.WriteFile(p, []byte(`{"version": 1, "lab": {"dir": "elsewhere"`), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			r, err := lab.Down(context.Background(), l.Dir, lab.WithLogger(labtest.Logger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("timing: down by conventions: %v (%+v)", time.Since(began), r)
			// The machines' veth pairs may go with their namespaces
			// before Down gets to them; the bridge may not.
			if r.Processes < 2*len(l.Machines)+1 || len(r.Namespaces) != len(l.Machines) || !slices.Contains(r.Links, lab.BridgeName) {
				t.Errorf("removed %+v", r)
			}
			assertGone(t, l.Dir, l.RunDir)
		})
	}
}

// TestUpRefusesUsedAddresses checks Up leaves a host alone whose
// 198.18.0.0/15 is used by a link the lab did not make.
func TestUpRefusesUsedAddresses(t *testing.T) {
	labtest.Require(t, false)
	labtest.RemoveAbandoned(t)
	dir := t.TempDir()
	// Wait for other packages' labs before taking the addresses.
	ctx, cancel := context.WithTimeout(context.Background(), labtest.Timeout)
	defer cancel()
	for {
		if _, up, err := lab.HostLab(); err != nil {
			t.Fatal(err)
		} else if !up {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("another lab stays up")
		case <-time.After(250 * time.Millisecond):
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = "berthtest0"
	br := &netlink.Bridge{LinkAttrs: la} // left down: it sends nothing
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(br) })
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.18.0.99/24"))}); err != nil {
		t.Fatal(err)
	}
	_, err := lab.Up(ctx, lab.Options{Nodes: 1, Dir: dir, SkipImages: true})
	if !errors.Is(err, lab.ErrAddressInUse) || !strings.Contains(err.Error(), "berthtest0") {
		t.Errorf("got %v, want ErrAddressInUse naming berthtest0", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("up left %d files in %s", len(ents), dir)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// TestFleetRepository commits the quickstart with the lab's machines and
// reads it back through gitsource and render: the lab's repository must
// load without a single error.
func TestFleetRepository(t *testing.T) {
	ctx := context.Background()
	l := lab.FakeLab(t, "/srv/lab", 3)
	qs, err := lab.FindQuickstart()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "fleet.git")
	commit, err := lab.WriteFleet(dir, l, qs, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gitsource.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	snap, err := repo.Snapshot(ctx, lab.Branch)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Commit.Hash != commit {
		t.Errorf("%s is at %s, committed %s", lab.Branch, snap.Commit.Hash, commit)
	}
	for _, f := range []string{"README.md", "app.yaml", "cluster.yaml", "machines.yaml"} {
		if _, err := snap.FS.(interface {
			ReadFile(string) ([]byte, error)
		}).ReadFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	checkFleet(t, snap, l)
}

// checkFleet loads a snapshot of the fleet repository and checks it holds
// the lab's machines and cluster settings, with no error diagnostics.
func checkFleet(t *testing.T, snap *gitsource.Snapshot, l *lab.Lab) {
	t.Helper()
	d, err := render.Load(context.Background(), snap.FS, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, diag := range d.Diagnostics {
		if diag.Severity == render.SeverityError {
			t.Errorf("fleet repository: %v", diag)
		}
	}
	machines := map[string]*v1alpha1.Machine{}
	for _, o := range d.Objects {
		if v, ok := o.Obj.(*v1alpha1.Machine); ok {
			machines[v.Name] = v
		}
	}
	if len(machines) != len(l.Machines) {
		t.Errorf("%d machines in the repository, lab has %d", len(machines), len(l.Machines))
	}
	for _, m := range l.Machines {
		got := machines[m.Name]
		if got == nil {
			t.Errorf("machine %s missing", m.Name)
			continue
		}
		s := got.Spec
		if s.Address != m.Address.Addr().String() || s.SSH.User != "root" || s.SSH.Port != lab.SSHPort ||
			s.SSH.HostKey != m.HostKey || s.PodCIDR != m.PodCIDR.String() ||
			got.Labels["kubernetes.io/hostname"] != m.Name || got.Spec.Agent.Namespace != m.Agent.Namespace {
			t.Errorf("machine %s: %+v %v %v", m.Name, s, got.Labels, got.Annotations)
		}
		a := s.Agent
		if a.StateDir != m.Agent.StateDir || a.Socket != m.Agent.Socket || a.LogDir != m.Agent.LogDir ||
			a.ContainerdAddress != m.Agent.ContainerdAddress || a.BinaryPath != m.Agent.BinaryPath {
			t.Errorf("machine %s: agent %+v, want %+v", m.Name, a, m.Agent)
		}
	}
	c := d.Cluster.Spec
	if c.PodCIDR != lab.PodCIDR.String() || c.ServiceCIDR != lab.ServiceCIDR.String() {
		t.Errorf("cluster CIDRs %s %s", c.PodCIDR, c.ServiceCIDR)
	}
	plain := false
	for _, r := range c.Registries {
		plain = plain || (r.Host == lab.RegistryHost && r.PlainHTTP)
	}
	if !plain {
		t.Errorf("cluster registries %+v: %s is not plain HTTP", c.Registries, lab.RegistryHost)
	}
}
