package render

import (
	"crypto/sha256"
	"sync"
)

// Cache keeps decoded files by name and content across loads. Objects that
// come out of a cache are shared by every Desired that loaded the same
// file, so callers must treat objects as read-only (they all should). It is
// safe for concurrent use: two loads that meet the same file at once decode
// it once, the second waiting for the first.
type Cache struct {
	mu sync.Mutex
	m  map[cacheKey]*cacheEntry
}

type cacheKey struct {
	name     string
	sum      [sha256.Size]byte
	maxNodes int
}

type cacheEntry struct {
	done chan struct{} // closed when r is set
	r    fileResult
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{m: make(map[cacheKey]*cacheEntry)}
}

func (c *Cache) get(name string, data []byte, opts Options, decode func(string, []byte, Options) fileResult) fileResult {
	k := cacheKey{name: name, sum: sha256.Sum256(data), maxNodes: opts.MaxNodes}
	c.mu.Lock()
	e, ok := c.m[k]
	if !ok {
		e = &cacheEntry{done: make(chan struct{})}
		c.m[k] = e
	}
	c.mu.Unlock()
	if ok {
		<-e.done
		return e.r
	}
	e.r = decode(name, data, opts)
	close(e.done)
	return e.r
}
