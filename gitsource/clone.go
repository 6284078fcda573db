package gitsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"
)

// CloneOptions says what to clone and how.
type CloneOptions struct {
	// URL of the repository: file://, ssh:// (or scp-like user@host:path)
	// or https://.
	URL string
	// Branch to clone alone; empty clones every branch, with HEAD at the
	// remote's default branch.
	Branch string
	// CacheDir keeps the clone on disk, in a directory named after the URL,
	// and reuses it (fetching instead of cloning) next time. Empty clones
	// into memory.
	CacheDir string
	// Depth limits history to that many commits per branch; 0 is all.
	Depth int
	// SSHKeyPath is the private key for ssh URLs; empty uses ssh-agent.
	SSHKeyPath string
	// KnownHosts is the known_hosts file that ssh host keys are checked
	// against; empty uses $SSH_KNOWN_HOSTS, ~/.ssh/known_hosts and
	// /etc/ssh/ssh_known_hosts. Host keys are always checked.
	KnownHosts string
}

const remoteName = "origin"

// Validate checks the options without touching the network or the disk.
func (o CloneOptions) Validate() error {
	if o.URL == "" {
		return errors.New("clone options: url is required")
	}
	scheme, err := urlScheme(o.URL)
	if err != nil {
		return fmt.Errorf("clone options: %w", err)
	}
	if o.Depth < 0 {
		return fmt.Errorf("clone options: depth %d is negative", o.Depth)
	}
	if o.Branch != "" {
		if err := plumbing.NewBranchReferenceName(o.Branch).Validate(); err != nil {
			return fmt.Errorf("clone options: branch %q is not a valid branch name", o.Branch)
		}
	}
	if scheme != "ssh" && (o.SSHKeyPath != "" || o.KnownHosts != "") {
		return fmt.Errorf("clone options: ssh key and known_hosts apply to ssh urls only, not %s", redactURL(o.URL))
	}
	return nil
}

// urlScheme classifies a clone URL as "file", "ssh" or "https".
func urlScheme(u string) (string, error) {
	if !IsURL(u) {
		return "", fmt.Errorf("url %q is a local path, not a url (open it instead)", u)
	}
	if !urlPattern.MatchString(u) {
		return "ssh", nil // scp-like
	}
	scheme, _, _ := strings.Cut(u, "://")
	switch s := strings.ToLower(scheme); s {
	case "file", "ssh", "https":
		return s, nil
	case "http", "git":
		return "", fmt.Errorf("url %s: %s:// is unencrypted and unauthenticated; use https:// or ssh://", redactURL(u), s)
	default:
		return "", fmt.Errorf("url %s: unsupported scheme %q (want file, ssh or https)", redactURL(u), s)
	}
}

// redactURL removes a password from u, for messages and the on-disk config.
func redactURL(u string) string {
	if !urlPattern.MatchString(u) {
		return u
	}
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	if _, ok := p.User.Password(); !ok {
		return u
	}
	p.User = url.UserPassword(p.User.Username(), "redacted")
	return p.String()
}

// Clone clones opts.URL, or with a CacheDir reuses an earlier clone there and
// fetches into it.
func Clone(ctx context.Context, opts CloneOptions) (*Repo, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	shown := redactURL(opts.URL)
	auth, err := opts.authMethod()
	if err != nil {
		return nil, fmt.Errorf("clone %s: %w", shown, err)
	}
	r := &Repo{remote: opts.URL, branch: opts.Branch, depth: opts.Depth, auth: auth}
	if opts.CacheDir == "" {
		repo, err := git.CloneContext(ctx, memory.NewStorage(), nil, r.cloneOptions())
		if err != nil {
			return nil, fmt.Errorf("clone %s: %w", shown, cloneError(err, opts.Branch))
		}
		r.repo = repo
		if err := r.syncHeadsLocked(); err != nil {
			return nil, fmt.Errorf("clone %s: %w", shown, err)
		}
		return r, nil
	}
	if err := r.openCache(ctx, opts); err != nil {
		return nil, fmt.Errorf("clone %s: %w", shown, err)
	}
	return r, nil
}

func (r *Repo) cloneOptions() *git.CloneOptions {
	o := &git.CloneOptions{
		URL:          r.remote,
		RemoteName:   remoteName,
		Auth:         r.auth,
		Depth:        r.depth,
		SingleBranch: r.branch != "",
		NoCheckout:   true,
		Tags:         r.tagMode(),
	}
	if r.branch != "" {
		o.ReferenceName = plumbing.NewBranchReferenceName(r.branch)
	}
	return o
}

// tagMode fetches every tag of a full clone, and for a single-branch clone
// only those that point into the branch.
func (r *Repo) tagMode() git.TagMode {
	if r.branch != "" {
		return git.TagFollowing
	}
	return git.AllTags
}

// cloneError makes a missing branch an ErrUnknownRevision.
func cloneError(err error, branch string) error {
	var nm git.NoMatchingRefSpecError
	if branch != "" && (errors.As(err, &nm) || errors.Is(err, plumbing.ErrReferenceNotFound)) {
		return fmt.Errorf("branch %q: %w", branch, ErrUnknownRevision)
	}
	return err
}

// cacheName is the directory of a URL's clone inside CacheDir: readable,
// and unique per URL (ignoring any password, so rotating a token keeps the
// cache).
var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func cacheName(u string) string {
	shown := redactURL(u)
	sum := sha256.Sum256([]byte(shown))
	base := strings.TrimSuffix(strings.TrimRight(shown, "/"), ".git")
	if i := strings.LastIndexAny(base, "/:"); i >= 0 {
		base = base[i+1:]
	}
	base = strings.Trim(unsafeChars.ReplaceAllString(base, "_"), "._")
	if base == "" {
		base = "repo"
	}
	return base + "-" + hex.EncodeToString(sum[:6]) + ".git"
}

// openCache reuses the bare clone of opts.URL under opts.CacheDir, fetching
// into it, or clones it there. A clone is made in a temporary directory and
// renamed into place, so a crash never leaves half a clone to reuse.
func (r *Repo) openCache(ctx context.Context, opts CloneOptions) error {
	dir := filepath.Join(opts.CacheDir, cacheName(opts.URL))
	if _, err := os.Stat(dir); err == nil {
		return r.reuseCache(ctx, dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache: %w", err)
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	tmp, err := os.MkdirTemp(opts.CacheDir, ".clone-")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	repo, err := git.PlainCloneContext(ctx, tmp, true, r.cloneOptions())
	if err != nil {
		return cloneError(err, opts.Branch)
	}
	// Keep any password in the URL out of the config on disk; fetches pass
	// the real URL.
	cfg, err := repo.Config()
	if err != nil {
		return fmt.Errorf("cache: read config: %w", err)
	}
	if rc := cfg.Remotes[remoteName]; rc != nil {
		rc.URLs = []string{redactURL(opts.URL)}
	}
	if err := repo.SetConfig(cfg); err != nil {
		return fmt.Errorf("cache: write config: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(dir); statErr == nil {
			// Another process cloned it meanwhile: use theirs.
			return r.reuseCache(ctx, dir)
		}
		return fmt.Errorf("cache: %w", err)
	}
	if repo, err = git.PlainOpen(dir); err != nil {
		return fmt.Errorf("cache: open %s: %w", dir, err)
	}
	if r.repo, err = keepPacksOpen(repo); err != nil {
		return fmt.Errorf("cache: open %s: %w", dir, err)
	}
	r.path = dir
	return r.syncHeadsLocked()
}

func (r *Repo) reuseCache(ctx context.Context, dir string) error {
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return fmt.Errorf("cache: open %s: %w", dir, err)
	}
	cfg, err := repo.Config()
	if err != nil {
		return fmt.Errorf("cache: read config of %s: %w", dir, err)
	}
	want := redactURL(r.remote)
	if rc := cfg.Remotes[remoteName]; rc == nil || len(rc.URLs) == 0 || rc.URLs[0] != want {
		return fmt.Errorf("cache: %s is not a clone of %s; remove it", dir, want)
	}
	if repo, err = keepPacksOpen(repo); err != nil {
		return fmt.Errorf("cache: open %s: %w", dir, err)
	}
	r.repo, r.path = repo, dir
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetchLocked(ctx)
}

// fetchLocked fetches the remote's branches (or the one branch) and tags,
// then points the local branches at what was fetched. Callers hold r.mu.
func (r *Repo) fetchLocked(ctx context.Context) error {
	spec := "+refs/heads/*:refs/remotes/" + remoteName + "/*"
	if r.branch != "" {
		spec = fmt.Sprintf("+refs/heads/%[1]s:refs/remotes/%[2]s/%[1]s", r.branch, remoteName)
	}
	err := r.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RemoteURL:  r.remote,
		RefSpecs:   []config.RefSpec{config.RefSpec(spec)},
		Depth:      r.depth,
		Auth:       r.auth,
		Tags:       r.tagMode(),
		Force:      true,
		Prune:      r.branch == "",
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s: %w", redactURL(r.remote), cloneError(err, r.branch))
	}
	if err := r.syncHeadsLocked(); err != nil {
		return fmt.Errorf("fetch %s: %w", redactURL(r.remote), err)
	}
	return nil
}

// syncHeadsLocked makes refs/heads/X equal refs/remotes/origin/X for every
// fetched branch, so that Resolve("feature") sees the remote's branch, and
// drops local branches the remote no longer has. A clone is a mirror here:
// nobody commits into it.
func (r *Repo) syncHeadsLocked() error {
	prefix := "refs/remotes/" + remoteName + "/"
	refs, err := r.repo.Storer.IterReferences()
	if err != nil {
		return fmt.Errorf("list references: %w", err)
	}
	remote := map[string]plumbing.Hash{}
	local := map[string]bool{}
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().String()
		switch {
		case ref.Type() != plumbing.HashReference:
		case strings.HasPrefix(name, prefix):
			remote[strings.TrimPrefix(name, prefix)] = ref.Hash()
		case ref.Name().IsBranch():
			local[ref.Name().Short()] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list references: %w", err)
	}
	for b, h := range remote {
		if b == "HEAD" || (r.branch != "" && b != r.branch) {
			continue
		}
		ref := plumbing.NewHashReference(plumbing.NewBranchReferenceName(b), h)
		if err := r.repo.Storer.SetReference(ref); err != nil {
			return fmt.Errorf("update branch %s: %w", b, err)
		}
	}
	if r.branch != "" {
		return nil
	}
	for b := range local {
		if _, ok := remote[b]; !ok {
			if err := r.repo.Storer.RemoveReference(plumbing.NewBranchReferenceName(b)); err != nil {
				return fmt.Errorf("remove branch %s: %w", b, err)
			}
		}
	}
	return nil
}

// authMethod builds the ssh authentication for ssh URLs, with host keys
// checked against known_hosts; other schemes need none (https credentials
// may be in the URL).
func (o CloneOptions) authMethod() (transport.AuthMethod, error) {
	scheme, err := urlScheme(o.URL)
	if err != nil || scheme != "ssh" {
		return nil, err
	}
	ep, err := transport.NewEndpoint(o.URL)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	var files []string
	if o.KnownHosts != "" {
		if _, err := os.Stat(o.KnownHosts); err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		files = []string{o.KnownHosts}
	}
	db, err := gitssh.NewKnownHostsDb(files...)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	hostKeys := gitssh.HostKeyCallbackHelper{
		HostKeyCallback:   db.HostKeyCallback(),
		HostKeyAlgorithms: db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port))),
	}
	if o.SSHKeyPath != "" {
		keys, err := gitssh.NewPublicKeysFromFile(user, o.SSHKeyPath, "")
		if err != nil {
			return nil, fmt.Errorf("ssh key %s: %w", o.SSHKeyPath, err)
		}
		keys.HostKeyCallbackHelper = hostKeys
		return keys, nil
	}
	agent, err := gitssh.NewSSHAgentAuth(user)
	if err != nil {
		return nil, fmt.Errorf("ssh agent (no ssh key path given): %w", err)
	}
	agent.HostKeyCallbackHelper = hostKeys
	return agent, nil
}
