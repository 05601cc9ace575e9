// The first file of every shader that uses subgroup operations (subgroupAdd and the subgroup builtins).
// Such a shader is built only on a device opened with the optional `subgroup` feature (`--subgroups`,
// where the adapter has it); each of its kernels has a baseline twin, which stays the default and runs
// everywhere else. naga 30 (wgpu 30) takes subgroup operations without WGSL's `enable subgroups;`
// directive and refuses the directive; a browser's own WGSL compiler needs it (the page runs baseline).
