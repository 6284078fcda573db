package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/sshx"
	"berth.dev/berth/render/api/v1alpha1"
)

const importImageHelp = `
Import the images of an image archive into the containerd of the fleet's
machines (all of them unless NAMEs are given), for machines that reach no
registry. FILE is an OCI image layout archive, or the output of
'docker save'; its images keep the names the archive gives them.

The archive is streamed from FILE through each machine's SSH connection to
its agent (--parallel machines at a time): no port is opened, and the agent
keeps the archive in its state directory only while importing it. The agent
refuses an archive over its limit (8 GiB unless its options say otherwise).
Pods use the imported images with imagePullPolicy Never, or IfNotPresent
with a tag other than latest.

One line per machine: the images imported with their ids (the image
config's digest, as pod statuses give imageID), and how long it took.

Exit status: 0 every machine imported, 1 one failed, 64 usage.

Examples:
  docker save -o app-1.tar example.com/app:1
  berth machines import-image app-1.tar             # every machine
  berth machines import-image app-1.tar lab1 lab2   # these two
  . /tmp/lab/lab.env && berth machines import-image echo-2.tar lab1
`

// defaultImportParallel is how many machines receive an archive at once:
// each is a full copy through the controller's uplink.
const defaultImportParallel = 4

func runImportImage(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "machines import-image", "[flags] FILE [NAME...]", importImageHelp)
	var o machinesOpts
	fleetFlags(fs, e, &o, "`branch` (or revision) of the fleet repository")
	fs.BoolVar(&o.acceptNew, "accept-new-host-keys", false, "accept host keys no pin or known host vouches for, and record them in --known-hosts")
	fs.BoolVar(&o.verbose, "v", false, "log every step and connection event to stderr (default: warnings only)")
	parallel := fs.Int("parallel", defaultImportParallel, "how many `machines` receive the archive at once")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up on a machine after this `duration`")
	pos, code, stop := parseInterspersed(e, fs, args)
	if stop {
		return code
	}
	usage := func(format string, args ...any) int {
		fmt.Fprintf(e.stderr, "berth machines import-image: "+format+"\n", args...)
		return exitUsage
	}
	switch {
	case len(pos) == 0:
		return usage("an archive FILE is needed")
	case o.repo == "":
		return usage("no fleet repository: give --repo or set BERTH_REPO")
	case o.acceptNew && o.knownHosts == "":
		return usage("--accept-new-host-keys needs --known-hosts to record them in")
	case *parallel < 1:
		return usage("--parallel must be at least 1")
	case *timeout <= 0:
		return usage("--timeout must be positive")
	}
	file, names := pos[0], pos[1:]
	size, err := checkArchive(file)
	if err != nil {
		return usage("%v", err)
	}

	f, err := loadFleet(ctx, e, o)
	if err != nil {
		return fail(e, "machines import-image: %v", err)
	}
	machines, err := f.pick(names)
	if err != nil {
		return usage("%v", err)
	}

	start := time.Now()
	failed := 0
	var mu sync.Mutex // serializes output lines and failed
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for _, m := range machines {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			began := time.Now()
			imgs, err := importOnto(ctx, f, m, file, *timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
			}
			printImport(e.stdout, m.Name, imgs, time.Since(began), err)
		})
	}
	wg.Wait()

	noun := "machines"
	if len(machines) == 1 {
		noun = "machine"
	}
	summary := fmt.Sprintf("%d imported", len(machines)-failed)
	if failed > 0 {
		summary += fmt.Sprintf(", %d failed", failed)
	}
	fmt.Fprintf(e.stdout, "%d %s: %s (%s archive) in %v\n", len(machines), noun, summary, formatSize(size), time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return exitError
	}
	return exitOK
}

// checkArchive refuses, before any machine is reached, a FILE that is
// not a tar archive, and returns its size.
func checkArchive(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	if _, err := tar.NewReader(f).Next(); err != nil {
		return 0, fmt.Errorf("%s is not an image archive (a tar file): %v", path, err)
	}
	return fi.Size(), nil
}

// importOnto streams the archive at path to the agent of m.
func importOnto(ctx context.Context, f *fleet, m *v1alpha1.Machine, path string, timeout time.Duration) ([]api.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	archive, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer archive.Close()
	c, err := sshx.New(m, f.ssh)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	ac := agentclient.New(c.UnixDialer(agentSocket(m)), agentclient.Options{MaxConns: 1})
	defer ac.Close()
	imgs, err := ac.ImportImages(ctx, archive)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("agent: no answer within --timeout %v", timeout)
		}
		return nil, fmt.Errorf("agent: %w", err)
	}
	return imgs, nil
}

func printImport(w io.Writer, name string, imgs []api.Image, took time.Duration, err error) {
	took = took.Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(w, "%-12s failed   after %v: %v\n", name, took, err)
		fmt.Fprint(w, hostKeyHint(err))
		return
	}
	parts := make([]string, len(imgs))
	for i, img := range imgs {
		parts[i] = img.Ref + " (id " + shortID(img.ID) + ")"
	}
	fmt.Fprintf(w, "%-12s imported %s, took %v\n", name, strings.Join(parts, ", "), took)
}

// shortID is an image id as docker prints it: 12 hex digits of the
// digest.
func shortID(id string) string {
	_, hex, ok := strings.Cut(id, ":")
	if !ok {
		hex = id
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// formatSize writes n bytes in a binary unit.
func formatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
