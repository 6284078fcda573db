// Package gitsource owns berth's access to git through go-git: opening local
// repositories, cloning and fetching remote ones, resolving revisions and
// reading the tree of a commit straight from the object store, without a
// worktree or a checkout. It writes status commits and git notes the same
// way, straight into the object store, moves their references by
// compare-and-swap and pushes them, rebuilding on conflict. Its sub-package
// watch notices new commits (fsnotify, poll, webhook).
//
// It knows nothing of Kubernetes: it hands out commits and file systems, and
// what the files mean is render's business.
package gitsource
