"""Development tools: generators of the checked-in WSDL files and SoapUI project.

Run by developers (``python -m archive_oa.devtools.wsdl_file``, ``…devtools.soapui_project``)
and by the tests that hold the checked-in files to the service; the running adapter never
imports them.
"""
