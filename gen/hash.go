package gen

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/presets"
)

// hashCache is the file the model hashes are kept in, below the user's
// cache folder; tests point it elsewhere.
var hashCache = func() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "stepwise", "model-hashes.json")
}

var hashMu sync.Mutex

type hashEntry struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Hash    string `json:"hash"`
}

// ModelHash is AUTOMATIC1111's "Model hash" of a checkpoint file (AutoV2:
// the first 10 hex digits of the file's SHA-256), or "" for what is not
// one file (a diffusers folder, the bundled model). A hash is computed
// once and kept in the user's cache folder by path, size and modification
// time.
func ModelHash(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return "", nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	hashMu.Lock()
	defer hashMu.Unlock()
	cacheFile := hashCache()
	cache := map[string]hashEntry{}
	if cacheFile != "" {
		if data, err := safefile.ReadFile(cacheFile, 4<<20); err == nil {
			_ = json.Unmarshal(data, &cache) // a damaged cache is rebuilt
		}
	}
	if e, ok := cache[abs]; ok && e.Size == st.Size() && e.ModTime == st.ModTime().UnixNano() && len(e.Hash) == 10 {
		return e.Hash, nil
	}
	f, _, err := safefile.Open(path)
	if err != nil {
		return "", fmt.Errorf("model hash: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("model hash %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:10]
	if cacheFile != "" {
		cache[abs] = hashEntry{Size: st.Size(), ModTime: st.ModTime().UnixNano(), Hash: sum}
		if data, err := json.Marshal(cache); err == nil {
			if os.MkdirAll(filepath.Dir(cacheFile), 0o755) == nil {
				_ = presets.WriteFileAtomic(cacheFile, data, 0o644) // only a cache
			}
		}
	}
	return sum, nil
}
