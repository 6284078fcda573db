package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Sentinel errors callers act on; check them with errors.Is.
var (
	// ErrNotRepository: the path is missing or holds no git repository.
	ErrNotRepository = errors.New("not a git repository")
	// ErrUnknownRevision: the revision names no commit in the repository.
	ErrUnknownRevision = errors.New("unknown revision")
)

// Repo is an opened or cloned repository. Its methods are safe for
// concurrent use; the file systems of its snapshots share its lock.
type Repo struct {
	mu   sync.Mutex
	repo *git.Repository

	path   string // local repository, cache clone, or "" for an in-memory clone
	subdir string // slash-separated directory of a worktree Open was given, "." at the root

	// Set for clones only.
	remote string
	branch string
	depth  int
	auth   transport.AuthMethod
}

// Commit describes one commit.
type Commit struct {
	Hash    string    // 40 hex digits
	Short   string    // first 7 hex digits
	Subject string    // first line of the message
	Author  string    // "Name <email>"
	Time    time.Time // author time
}

// Open opens the local repository at path: a bare repository, a worktree, or
// a directory inside a worktree. In the last case snapshots show only that
// directory (see Subdir), as an operator pointing at a sub-folder of a
// monorepo expects; symbolic links may still reach the rest of the
// repository.
func Open(ctx context.Context, path string) (*Repo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: %w: no such directory", path, ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open repository %s: %w: not a directory", path, ErrNotRepository)
	}
	// First as a bare repository or the top of a worktree; then, for a
	// directory inside a worktree, by looking for .git upwards (which
	// would never find a bare repository).
	r, err := git.PlainOpenWithOptions(path, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		r, err = git.PlainOpenWithOptions(path, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	}
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, fmt.Errorf("open repository %s: %w", path, ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	subdir, err := worktreeSubdir(r, path)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	if r, err = keepPacksOpen(r); err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	return &Repo{repo: r, path: path, subdir: subdir}, nil
}

// maxOpenPacks bounds the packfiles a Repo keeps open between reads.
const maxOpenPacks = 16

// keepPacksOpen reopens r's on-disk storage so that packfiles stay open
// between object reads (go-git's default reopens the pack for every object,
// which costs more than reading a small blob). The result has no worktree:
// nothing here checks files out.
func keepPacksOpen(r *git.Repository) (*git.Repository, error) {
	s, ok := r.Storer.(*filesystem.Storage)
	if !ok {
		return r, nil
	}
	return git.Open(newStorage(s), nil)
}

// newStorage opens the object store of s afresh. ExclusiveAccess lets
// go-git list loose objects once instead of trying to open one file per
// object looked up (each lookup of a packed object first failed an open(2)
// of its loose path: a third of a 10,000-file plan). Objects written after
// that are seen only by a new storage, which Fetch makes.
func newStorage(s *filesystem.Storage) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(s.Filesystem(), cache.NewObjectLRUDefault(),
		filesystem.Options{MaxOpenDescriptors: maxOpenPacks, ExclusiveAccess: true})
}

// Close releases the packfiles kept open. The Repo and its snapshots must
// not be used afterwards.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.repo.Storer.(*filesystem.Storage); ok {
		return s.Close()
	}
	return nil
}

// worktreeSubdir is the slash-separated path of dir relative to the root of
// r's worktree, "." for the root itself, a bare repository or a git directory.
func worktreeSubdir(r *git.Repository, dir string) (string, error) {
	wt, err := r.Worktree()
	if errors.Is(err, git.ErrIsBareRepository) {
		return ".", nil
	}
	if err != nil {
		return "", err
	}
	root, err := filepath.EvalSymlinks(wt.Filesystem.Root())
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil {
		return "", err
	}
	rel = filepath.ToSlash(rel)
	if rel == ".git" || strings.HasPrefix(rel, ".git/") || rel == ".." || strings.HasPrefix(rel, "../") {
		return ".", nil
	}
	return rel, nil
}

// urlPattern matches a URL with a scheme, as in "https://host/x".
var urlPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// IsURL reports whether repoArg names a remote repository, that is whether it
// has a scheme ("ssh://", "https://", "file://") or is scp-like
// ("git@host:org/repo"), rather than a local path. As git does, a colon
// preceded by a slash ("./a:b", "/x/y:z") makes a path.
func IsURL(repoArg string) bool {
	if urlPattern.MatchString(repoArg) {
		return true
	}
	before, _, ok := strings.Cut(repoArg, ":")
	return ok && before != "" && !strings.Contains(before, "/")
}

// OpenOrClone opens repoArg when it is a local path and clones it with opts
// (whose URL it sets) when it is a URL. It backs the CLI's --repo PATH|URL.
func OpenOrClone(ctx context.Context, repoArg string, opts CloneOptions) (*Repo, error) {
	if IsURL(repoArg) {
		opts.URL = repoArg
		if !IsSSH(repoArg) {
			// The key and known_hosts callers pass are often the machines'
			// (one --ssh-key for both); they have no say over https or
			// file URLs.
			opts.SSHKeyPath, opts.KnownHosts = "", ""
		}
		return Clone(ctx, opts)
	}
	return Open(ctx, repoArg)
}

// IsSSH reports whether u is a URL reached over SSH (ssh://... or the
// scp-like user@host:path).
func IsSSH(u string) bool {
	scheme, err := urlScheme(u)
	return err == nil && scheme == "ssh"
}

// Path is the repository's directory, "" for an in-memory clone.
func (r *Repo) Path() string { return r.path }

// Subdir is the directory, relative to the repository root, that Open was
// given inside a worktree, and that snapshots show; "." otherwise.
func (r *Repo) Subdir() string {
	if r.subdir == "" {
		return "."
	}
	return r.subdir
}

// Remote is the URL a clone came from (with any password removed), "" for a
// local repository.
func (r *Repo) Remote() string { return redactURL(r.remote) }

// Fetch brings a clone up to date with its remote; "already up to date" is
// success. For a local repository it reopens the object store, so that
// commits pushed into it since Open become visible.
func (r *Repo) Fetch(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.remote == "" {
		if s, ok := r.repo.Storer.(*filesystem.Storage); ok {
			repo, err := git.Open(newStorage(s), nil)
			if err != nil {
				return fmt.Errorf("reopen repository %s: %w", r.path, err)
			}
			s.Close()
			r.repo = repo
		}
		return ctx.Err()
	}
	return r.fetchLocked(ctx)
}

// Resolve resolves rev (a branch, tag, full or short hash, HEAD, HEAD~1,
// main^ and the like) to a commit.
func (r *Repo) Resolve(rev string) (Commit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.resolveLocked(rev)
	if err != nil {
		return Commit{}, err
	}
	return toCommit(c), nil
}

func (r *Repo) resolveLocked(rev string) (*object.Commit, error) {
	h, err := r.repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		if isUnknownRevision(err) {
			return nil, fmt.Errorf("resolve %q: %w", rev, ErrUnknownRevision)
		}
		return nil, fmt.Errorf("resolve %q: %w", rev, err)
	}
	c, err := r.repo.CommitObject(*h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		// A shallow clone's boundary, or a tag of a non-commit.
		return nil, fmt.Errorf("resolve %q: %w", rev, ErrUnknownRevision)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %q: read commit %s: %w", rev, h, err)
	}
	return c, nil
}

// isUnknownRevision tells a revision that names nothing (no such ref or
// object, too many ancestors, malformed) from a failure to read the store.
func isUnknownRevision(err error) bool {
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound),
		errors.Is(err, plumbing.ErrObjectNotFound),
		errors.Is(err, object.ErrParentNotFound),
		errors.Is(err, io.EOF): // walked past the root commit
		return true
	}
	// go-git's parse errors are of an internal type: *revision.ErrInvalidRevision.
	return strings.HasSuffix(fmt.Sprintf("%T", err), "revision.ErrInvalidRevision")
}

func toCommit(c *object.Commit) Commit {
	h := c.Hash.String()
	subject, _, _ := strings.Cut(strings.TrimLeft(c.Message, "\n"), "\n")
	return Commit{
		Hash:    h,
		Short:   h[:7],
		Subject: strings.TrimSpace(subject),
		Author:  fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
		Time:    c.Author.When,
	}
}
