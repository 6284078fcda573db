package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotFound is returned by Status when dir holds no lab.
var ErrNotFound = errors.New("no lab")

// Check is the outcome of one health check: OK, with a detail (a version,
// a commit) or what went wrong.
type Check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func ok(detail string) Check { return Check{OK: true, Detail: detail} }
func bad(err error) Check    { return Check{Detail: err.Error()} }

// MachineStatus is the health of one machine.
type MachineStatus struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	Netns      Check  `json:"netns"`
	SSH        Check  `json:"ssh"`
	Containerd Check  `json:"containerd"`
}

// Report is the health of a lab.
type Report struct {
	Dir string `json:"dir"`
	// Started is when Up began; Ready when it finished (zero if it did
	// not), after UpTook.
	Started time.Time     `json:"started"`
	Ready   time.Time     `json:"ready,omitzero"`
	UpTook  time.Duration `json:"upTook,omitempty"`
	// Owner is the pid of the process that ran Up; OwnerAlive whether it
	// still runs (a CLI's has ended; a test's runs until the test ends).
	Owner      int             `json:"owner"`
	OwnerAlive bool            `json:"ownerAlive"`
	Machines   []MachineStatus `json:"machines"`
	Registry   Check           `json:"registry"`
	Repository Check           `json:"repository"`
	// Took is how long the checks took.
	Took time.Duration `json:"took"`
}

// Healthy reports whether Up finished and every check passed.
func (r *Report) Healthy() bool {
	if r.Ready.IsZero() || !r.Registry.OK || !r.Repository.OK {
		return false
	}
	for _, m := range r.Machines {
		if !m.Netns.OK || !m.SSH.OK || !m.Containerd.OK {
			return false
		}
	}
	return true
}

// WriteText writes the report for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	mark := func(c Check) string {
		if c.OK {
			if c.Detail != "" {
				return "ok (" + c.Detail + ")"
			}
			return "ok"
		}
		return "FAIL: " + firstLine(c.Detail)
	}
	fmt.Fprintf(tw, "lab %s\n", r.Dir)
	if r.Ready.IsZero() {
		fmt.Fprintf(tw, "up:\tstarted %s, never finished\n", r.Started.Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "up:\t%s at %s\n", r.UpTook.Round(time.Millisecond), r.Ready.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "MACHINE\tADDRESS\tNAMESPACE\tSSHD\tCONTAINERD\n")
	for _, m := range r.Machines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Address, mark(m.Netns), mark(m.SSH), mark(m.Containerd))
	}
	fmt.Fprintf(tw, "registry:\t%s\n", mark(r.Registry))
	fmt.Fprintf(tw, "repository:\t%s\n", mark(r.Repository))
	fmt.Fprintf(tw, "checked in:\t%s\n", r.Took.Round(time.Millisecond))
	return tw.Flush()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Status checks the lab in dir from the host: each machine's namespace,
// that its sshd answers on its address and its containerd on its socket,
// the registry (with the images Up pushed) and the repository. It
// returns ErrNotFound when dir holds no lab. It changes nothing.
func Status(ctx context.Context, dir string, opts ...Option) (*Report, error) {
	_ = configure(opts)
	began := time.Now()
	dir, err := absDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	st, err := readState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("lab status: %w in %s", ErrNotFound, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lab status: %w", err)
	}
	l := st.Lab
	r := &Report{
		Dir:        dir,
		Started:    st.Started,
		Ready:      st.Ready,
		UpTook:     time.Duration(st.UpSeconds * float64(time.Second)),
		Owner:      st.Owner.PID,
		OwnerAlive: st.Owner.PID > 0 && st.Owner.alive(),
	}
	r.Machines = make([]MachineStatus, len(l.Machines))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range l.Machines {
		r.Machines[i] = MachineStatus{Name: m.Name, Address: m.Address.Addr().String()}
		ms := &r.Machines[i]
		ms.Netns = netnsCheck(m.NetnsPath)
		wg.Go(func() {
			if err := sshBanner(ctx, m.SSHAddr()); err != nil {
				ms.SSH = bad(err)
			} else {
				ms.SSH = ok("")
			}
		})
		wg.Go(func() {
			if v, err := containerdVersion(ctx, m.Containerd.Address); err != nil {
				ms.Containerd = bad(err)
			} else {
				ms.Containerd = ok(v)
			}
		})
	}
	wg.Go(func() { r.Registry = registryCheck(ctx, l) })
	wg.Go(func() { r.Repository = repoCheck(l.Repo) })
	wg.Wait()
	r.Took = time.Since(began)
	return r, nil
}

// HostLab reports whether a lab is up on this host and, when its bridge
// says, the directory it lives in.
func HostLab() (dir string, up bool, err error) {
	l, err := netlink.LinkByName(BridgeName)
	if err == nil {
		dir, _ := strings.CutPrefix(l.Attrs().Alias, "berth lab ")
		return dir, true, nil
	}
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		return "", false, fmt.Errorf("find lab bridge: %w", err)
	}
	if names, _ := filepath.Glob(filepath.Join(netnsDir, Prefix+"*")); len(names) > 0 {
		return "", true, nil
	}
	return "", false, nil
}

// nsfsMagic is the filesystem type of a bound namespace (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

func netnsCheck(path string) Check {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return bad(err)
	}
	if fs.Type != nsfsMagic {
		return bad(fmt.Errorf("%s is not a bound namespace", path))
	}
	return ok(filepath.Base(path))
}

// registryCheck checks the registry answers and holds the images Up pushed.
func registryCheck(ctx context.Context, l *Lab) Check {
	if err := registryAnswers(ctx, l.Registry); err != nil {
		return bad(err)
	}
	for _, ref := range l.Images {
		repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, l.Registry+"/"), ":")
		tags, err := registryTags(ctx, l.Registry, repo)
		if err != nil {
			return bad(err)
		}
		if !slices.Contains(tags, tag) {
			return bad(fmt.Errorf("%s is missing", ref))
		}
	}
	return ok(fmt.Sprintf("%s, %d images", l.Registry, len(l.Images)))
}

func registryTags(ctx context.Context, host, repo string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/"+repo+"/tags/list", nil)
	if err != nil {
		return nil, err
	}
	resp, err := registryClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list tags of %s: %s", repo, resp.Status)
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	return list.Tags, nil
}

// repoCheck checks the fleet repository has its branch.
func repoCheck(path string) Check {
	if _, err := os.Stat(path); err != nil {
		return bad(err)
	}
	repo, err := git.PlainOpen(path)
	if err != nil {
		return bad(fmt.Errorf("open %s: %w", path, err))
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName(Branch), true)
	if err != nil {
		return bad(fmt.Errorf("%s: branch %s: %w", path, Branch, err))
	}
	return ok(Branch + " at " + ref.Hash().String()[:12])
}
