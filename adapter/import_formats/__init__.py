"""Import formats: what ``archive-oa import --format`` reads, each turned into canonical voucher XML.

A format is found through the entry-point group ``archive_oa.import_formats`` (``registry``), the
built-in ``canonical`` format as well; it meets the small contract in ``contract``.
"""
