package membudget

import (
	"errors"
	"testing"
	"testing/fstest"
)

const meminfo = "MemTotal:       16777216 kB\nMemFree:         1000 kB\n"

func TestDetect(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  Limit
		err   bool
	}{
		{
			name: "cgroup v2 in its namespace",
			files: map[string]string{
				"proc/self/cgroup":           "0::/\n",
				"proc/self/mountinfo":        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
				"sys/fs/cgroup/memory.max":   "1073741824\n",
				"proc/meminfo":               meminfo,
				"sys/fs/cgroup/memory.other": "x",
			},
			want: Limit{Bytes: (1 << 30) / 100 * 90, Found: 1 << 30, Source: SourceCgroupV2, Path: "/sys/fs/cgroup/memory.max"},
		},
		{
			name: "cgroup v2 nested: the lowest limit on the way up",
			files: map[string]string{
				"proc/self/cgroup":                               "0::/kubepods/pod1/c1\n",
				"proc/self/mountinfo":                            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
				"sys/fs/cgroup/kubepods/pod1/c1/memory.max":      "max\n",
				"sys/fs/cgroup/kubepods/pod1/memory.max":         "536870912\n",
				"sys/fs/cgroup/kubepods/memory.max":              "8589934592\n",
				"sys/fs/cgroup/kubepods/pod1/c1/memory.current":  "1\n",
				"proc/meminfo":                                   meminfo,
				"sys/fs/cgroup/kubepods/pod1/c1/cgroup.controls": "memory",
			},
			want: Limit{Bytes: (512 << 20) / 100 * 90, Found: 512 << 20, Source: SourceCgroupV2, Path: "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		},
		{
			name: "cgroup v1, mount root is the container's group",
			files: map[string]string{
				"proc/self/cgroup": "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
				"proc/self/mountinfo": "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n" +
					"32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":      "268435456\n",
				"sys/fs/cgroup/cpu,cpuacct/memory.limit_in_bytes": "1\n",
				"proc/meminfo": meminfo,
			},
			want: Limit{Bytes: (256 << 20) / 100 * 90, Found: 256 << 20, Source: SourceCgroupV1, Path: "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		},
		{
			name: "cgroup v1 unlimited, hybrid v2 without memory: RAM",
			files: map[string]string{
				"proc/self/cgroup": "9:name=systemd:/\n4:memory:/process_api/aa\n0::/\n",
				"proc/self/mountinfo": "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
					"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
				"sys/fs/cgroup/memory/process_api/aa/memory.limit_in_bytes": "9223372036854771712\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":                "9223372036854771712\n",
				"sys/fs/cgroup/unified/cgroup.procs":                        "1\n",
				"proc/meminfo":                                              meminfo,
			},
			want: Limit{Bytes: (16 << 30) / 4, Found: 16 << 30, Source: SourceRAM, Path: "/proc/meminfo"},
		},
		{
			name: "both hierarchies limit: the lower",
			files: map[string]string{
				"proc/self/cgroup": "4:memory:/a\n0::/b\n",
				"proc/self/mountinfo": "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
					"41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
				"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "2147483648\n",
				"sys/fs/cgroup/unified/b/memory.max":           "1073741824\n",
				"proc/meminfo":                                 meminfo,
			},
			want: Limit{Bytes: (1 << 30) / 100 * 90, Found: 1 << 30, Source: SourceCgroupV2, Path: "/sys/fs/cgroup/unified/b/memory.max"},
		},
		{
			name: "group outside the mount's root: the mount's root",
			files: map[string]string{
				"proc/self/cgroup":             "0::/../other\n",
				"proc/self/mountinfo":          "30 23 0:26 /mine /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
				"sys/fs/cgroup/memory.max":     "1073741824\n",
				"sys/fs/cgroup/x/memory.max":   "1\n",
				"proc/meminfo":                 meminfo,
				"sys/fs/cgroup/mine/memory.xx": "",
			},
			want: Limit{Bytes: (1 << 30) / 100 * 90, Found: 1 << 30, Source: SourceCgroupV2, Path: "/sys/fs/cgroup/memory.max"},
		},
		{
			name: "escaped mount point",
			files: map[string]string{
				"proc/self/cgroup":            "0::/\n",
				"proc/self/mountinfo":         `30 23 0:26 / /sys/fs/my\040cgroup rw - cgroup2 cgroup2 rw` + "\n",
				"sys/fs/my cgroup/memory.max": "1073741824\n",
				"proc/meminfo":                meminfo,
			},
			want: Limit{Bytes: (1 << 30) / 100 * 90, Found: 1 << 30, Source: SourceCgroupV2, Path: "/sys/fs/my cgroup/memory.max"},
		},
		{
			name:  "no cgroup files: RAM",
			files: map[string]string{"proc/meminfo": meminfo},
			want:  Limit{Bytes: (16 << 30) / 4, Found: 16 << 30, Source: SourceRAM, Path: "/proc/meminfo"},
		},
		{
			name:  "nothing readable",
			files: map[string]string{"proc/meminfo": "MemFree: 12 kB\n"},
			err:   true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range tt.files {
				fsys[name] = &fstest.MapFile{Data: []byte(data)}
			}
			got, err := Detect(fsys)
			if tt.err {
				if err == nil {
					t.Fatalf("Detect = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Detect =\n%+v, want\n%+v", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	detected := Limit{Bytes: 900, Found: 1000, Source: SourceCgroupV2}
	detect := func() (Limit, error) { return detected, nil }
	for _, tt := range []struct {
		name                   string
		configured, goMemLimit int64
		want                   Limit
		setGo                  bool
	}{
		{"memory_limit", 512 << 20, 0, Limit{Bytes: 512 << 20, Found: 512 << 20, Source: SourceConfig}, true},
		{"memory_limit and GOMEMLIMIT: Go keeps GOMEMLIMIT", 512 << 20, 300 << 20, Limit{Bytes: 512 << 20, Found: 512 << 20, Source: SourceConfig}, false},
		{"GOMEMLIMIT alone", 0, 300 << 20, Limit{Bytes: 300 << 20, Found: 300 << 20, Source: SourceGOMEMLIMIT}, false},
		{"detected", 0, 0, detected, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, setGo, err := Resolve(tt.configured, tt.goMemLimit, detect)
			if err != nil || got != tt.want || setGo != tt.setGo {
				t.Errorf("Resolve = %+v, %v, %v; want %+v, %v", got, setGo, err, tt.want, tt.setGo)
			}
		})
	}
	fail := errors.New("no limit")
	if _, _, err := Resolve(0, 0, func() (Limit, error) { return Limit{}, fail }); !errors.Is(err, fail) {
		t.Errorf("Resolve with a failing detection: %v", err)
	}
}

func TestLimitString(t *testing.T) {
	for l, want := range map[Limit]string{
		{Bytes: 512 << 20, Found: 512 << 20, Source: SourceConfig}:            "512 MiB (memory_limit)",
		{Bytes: (1 << 30) / 100 * 90, Found: 1 << 30, Source: SourceCgroupV2}: "921.6 MiB (90% of cgroup v2 memory.max 1 GiB)",
		{Bytes: 4 << 30, Found: 16 << 30, Source: SourceRAM}:                  "4 GiB (25% of RAM 16 GiB)",
	} {
		if got := l.String(); got != want {
			t.Errorf("String = %q, want %q", got, want)
		}
	}
}
