"""The legacy Xen backend: the xm/xl toolstack and xm-format config files.

toolstack.py  which toolstack, running it, parsing `list` and `info`
params.py     which params of the contract (virt/params.py) xm honours; its quoting rule
config.py     rendering (and reading back) the config file; disk prefix policy
driver.py     XmDriver, the ComputeDriver over all of the above
"""
