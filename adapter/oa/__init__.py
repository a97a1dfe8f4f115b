"""The OA side: the zeep client of the OA's workflow service (``client``) and the
reference legacy OA simulator (``simulator``).

Nothing is re-exported here so that importing the package does not load zeep or spyne;
import ``archive_oa.oa.client`` or ``archive_oa.oa.simulator`` where needed.
"""
