package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// PushOptions says where status goes and how hard to try.
type PushOptions struct {
	// URL of the repository to push to (file://, ssh://, https://, or a
	// local path); empty is the remote the Repo was cloned from. A Repo
	// opened locally has no default.
	URL string
	// SSHKeyPath and KnownHosts authenticate an ssh URL other than the
	// clone's own (whose authentication is reused), as in CloneOptions.
	SSHKeyPath string
	KnownHosts string
	// Refs are the full names of the references to push; empty is
	// refs/heads/berth/status and refs/notes/berth. A reference missing
	// locally is not pushed.
	Refs []string
	// Attempts bounds the pushes tried, the first included; 0 is 5.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each later
	// one (plus up to 50% jitter, at most 10 s); 0 is 200 ms.
	Backoff time.Duration
	// Logger receives a line per retry; nil discards them.
	Logger *slog.Logger
}

const (
	defaultPushAttempts = 5
	defaultPushBackoff  = 200 * time.Millisecond
	maxPushBackoff      = 10 * time.Second
	pushRemoteName      = "berth-status"
)

// Validate checks the options without touching the network or the disk.
func (o PushOptions) Validate() error {
	if o.Attempts < 0 {
		return fmt.Errorf("push options: attempts %d is negative", o.Attempts)
	}
	if o.Backoff < 0 {
		return fmt.Errorf("push options: backoff %s is negative", o.Backoff)
	}
	for _, ref := range o.Refs {
		if !strings.HasPrefix(ref, "refs/") || plumbing.ReferenceName(ref).Validate() != nil {
			return fmt.Errorf("push options: %q is not a full reference name", ref)
		}
	}
	if o.URL != "" && IsURL(o.URL) {
		co := CloneOptions{URL: o.URL, SSHKeyPath: o.SSHKeyPath, KnownHosts: o.KnownHosts}
		if err := co.Validate(); err != nil {
			return fmt.Errorf("push options: %s", strings.TrimPrefix(err.Error(), "clone options: "))
		}
	} else if o.SSHKeyPath != "" || o.KnownHosts != "" {
		return errors.New("push options: ssh key and known_hosts apply to ssh urls only")
	}
	return nil
}

func (o PushOptions) refs() []string {
	if len(o.Refs) > 0 {
		return o.Refs
	}
	return []string{branchRef(DefaultStatusBranch).String(), DefaultNotesRef}
}

// Push pushes opts.Refs (the status branch and the notes, by default) to
// the remote, each only as a fast-forward of what the remote holds, and
// all at once where the server can (git's atomic push). receive-pack
// checks each reference's old value under its lock, so a push that lost a
// race to another writer is refused, never merged or forced.
//
// On such a conflict Push waits (backoff with jitter), fetches the
// remote's references over the local ones (status is regenerated, not
// merged), calls rebuild to write the status commit and notes again on top
// of them (WriteStatus and AddNote), and pushes again, up to opts.Attempts
// pushes; then it fails with ErrConflict. Other errors end it at once.
func (r *Repo) Push(ctx context.Context, opts PushOptions, rebuild func(ctx context.Context) error) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	if rebuild == nil {
		return errors.New("push: a rebuild function is required to retry after a conflict")
	}
	url, auth, err := r.pushTarget(opts)
	if err != nil {
		return err
	}
	shown := redactURL(url)
	refs := opts.refs()
	attempts := opts.Attempts
	if attempts == 0 {
		attempts = defaultPushAttempts
	}
	wait := opts.Backoff
	if wait == 0 {
		wait = defaultPushBackoff
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for attempt := 1; ; attempt++ {
		err := r.pushOnce(ctx, url, auth, refs)
		if err == nil {
			return nil
		}
		if !isPushConflict(err) {
			return fmt.Errorf("push to %s: %w", shown, err)
		}
		if attempt >= attempts {
			return fmt.Errorf("push to %s: gave up after %d attempts: %w: %v", shown, attempt, ErrConflict, err)
		}
		d := wait + rand.N(wait/2+1)
		log.Info("status push lost a race, fetching and rebuilding", "remote", shown, "attempt", attempt, "wait", d, "reason", err)
		if err := sleepCtx(ctx, d); err != nil {
			return fmt.Errorf("push to %s: %w", shown, err)
		}
		wait = min(2*wait, maxPushBackoff)
		if err := r.fetchRefs(ctx, url, auth, refs); err != nil {
			return fmt.Errorf("push to %s: after a conflict: %w", shown, err)
		}
		if err := rebuild(ctx); err != nil {
			return fmt.Errorf("push to %s: rebuild after a conflict: %w", shown, err)
		}
	}
}

// pushTarget is the URL to push to and its authentication.
func (r *Repo) pushTarget(opts PushOptions) (string, transport.AuthMethod, error) {
	if opts.URL == "" || opts.URL == r.remote {
		if r.remote == "" {
			return "", nil, errors.New("push: a repository opened locally needs a url to push to")
		}
		return r.remote, r.auth, nil
	}
	if !IsURL(opts.URL) {
		return opts.URL, nil, nil
	}
	auth, err := CloneOptions{URL: opts.URL, SSHKeyPath: opts.SSHKeyPath, KnownHosts: opts.KnownHosts}.authMethod()
	if err != nil {
		return "", nil, fmt.Errorf("push to %s: %w", redactURL(opts.URL), err)
	}
	return opts.URL, auth, nil
}

func (r *Repo) remoteFor(url string) *git.Remote {
	return git.NewRemote(r.repo.Storer, &config.RemoteConfig{Name: pushRemoteName, URLs: []string{url}})
}

// pushOnce pushes the references that exist locally, without force.
func (r *Repo) pushOnce(ctx context.Context, url string, auth transport.AuthMethod, refs []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var specs []config.RefSpec
	for _, ref := range refs {
		h, err := readRef(r.repo.Storer, plumbing.ReferenceName(ref))
		if err != nil {
			return err
		}
		if !h.IsZero() {
			specs = append(specs, config.RefSpec(ref+":"+ref))
		}
	}
	if len(specs) == 0 {
		return nil
	}
	err := r.remoteFor(url).PushContext(ctx, &git.PushOptions{
		RemoteName: pushRemoteName,
		RemoteURL:  url,
		RefSpecs:   specs,
		Auth:       auth,
		Atomic:     true,
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// fetchRefs makes the local refs what the remote holds: fetched when it
// has them, removed when it does not.
func (r *Repo) fetchRefs(ctx context.Context, url string, auth transport.AuthMethod, refs []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rem := r.remoteFor(url)
	listed, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return fmt.Errorf("list remote references: %w", err)
	}
	present := map[string]bool{}
	for _, ref := range listed {
		present[ref.Name().String()] = true
	}
	var specs []config.RefSpec
	for _, ref := range refs {
		if present[ref] {
			specs = append(specs, config.RefSpec("+"+ref+":"+ref))
			continue
		}
		err := r.repo.Storer.RemoveReference(plumbing.ReferenceName(ref))
		if err != nil && !errors.Is(err, plumbing.ErrReferenceNotFound) {
			return fmt.Errorf("drop local %s: %w", ref, err)
		}
	}
	if len(specs) == 0 {
		return nil
	}
	err = rem.FetchContext(ctx, &git.FetchOptions{
		RemoteName: pushRemoteName,
		RemoteURL:  url,
		RefSpecs:   specs,
		Auth:       auth,
		Tags:       git.NoTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s: %w", strings.Join(refs, ", "), err)
	}
	return nil
}

// isPushConflict tells a push refused because a reference moved (by
// go-git's fast-forward check before sending, or by receive-pack's check of
// the old value under its lock) from any other failure. go-git reports
// both only as text.
func isPushConflict(err error) bool {
	msg := err.Error()
	for _, s := range []string{
		"non-fast-forward",
		"fetch first",
		"failed to update ref",
		"cannot lock ref",
		"failed to lock",
		"atomic push failed",
		"atomic transaction failed",
		"stale info",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
