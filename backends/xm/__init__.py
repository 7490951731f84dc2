"""The legacy Xen backend: the xm/xl toolstack and xm-format config files.

toolstack.py  which toolstack, running it, parsing `list` and `info`
params.py     the hypervisor parameter table (syntax and node checks)
config.py     rendering (and reading back) the config file; disk prefix policy
driver.py     XmDriver, the ComputeDriver over all of the above
"""
