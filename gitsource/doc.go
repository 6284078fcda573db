// Package gitsource owns berth's access to git through go-git: opening local
// repositories, cloning and fetching remote ones, resolving revisions and
// reading the tree of a commit straight from the object store, without a
// worktree or a checkout. Later it also watches repositories for new commits
// and writes status commits and notes.
//
// It knows nothing of Kubernetes: it hands out commits and file systems, and
// what the files mean is render's business.
package gitsource
