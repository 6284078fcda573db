package render

import (
	"crypto/sha256"
	"sync"
)

// Cache keeps decoded files by name and content across loads. Objects that
// come out of a cache are shared by every Desired that loaded the same
// file, so callers must treat objects as read-only (they all should). It is
// safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[cacheKey]fileResult
}

type cacheKey struct {
	name     string
	sum      [sha256.Size]byte
	maxNodes int
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{m: make(map[cacheKey]fileResult)}
}

func (c *Cache) get(name string, data []byte, opts Options, decode func(string, []byte, Options) fileResult) fileResult {
	k := cacheKey{name: name, sum: sha256.Sum256(data), maxNodes: opts.MaxNodes}
	c.mu.Lock()
	r, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return r
	}
	r = decode(name, data, opts)
	c.mu.Lock()
	c.m[k] = r
	c.mu.Unlock()
	return r
}
