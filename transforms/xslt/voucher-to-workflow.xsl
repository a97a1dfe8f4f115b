<?xml version="1.0" encoding="UTF-8"?>
<!--
  Canonical voucher (urn:archive-oa:voucher:1) → OA workflow request (urn:archive-oa:oa-workflow:1).

  Every OA-specific name is a parameter, set from the [workflow] section of the configuration
  (adapter/settings.py WorkflowSettings, same names), so a deployment maps its own OA form
  without editing this file.  A deployment whose form differs more may point
  [workflow] stylesheet at its own copy; the parameters below are what the adapter passes.

  The stylesheet runs sandboxed (no document(), no file, network or write access).

  Money is never formatted with format-number() or added with sum(): XPath 1.0 numbers are
  binary doubles, which lose cents above ~9×10^13 while voucher.xsd allows 18 digits.  A line
  amount is rewritten digit by digit from its text (template "money"); the voucher total is
  arc:exact-sum, the Decimal function the business rules use (../rule_functions.py), which the
  adapter registers for this stylesheet and for a deployment's own.
-->
<xsl:stylesheet version="1.0"
                xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:v="urn:archive-oa:voucher:1"
                xmlns:arc="urn:archive-oa:rules:1"
                xmlns="urn:archive-oa:oa-workflow:1"
                exclude-result-prefixes="v arc">

  <xsl:output method="xml" encoding="UTF-8" indent="no"/>

  <!-- the request -->
  <xsl:param name="workflow_code" select="'FIN_VOUCHER_APPROVAL'"/>
  <xsl:param name="creator" select="'archive-oa'"/>
  <xsl:param name="title_pattern" select="'{orgName} {period} {voucherWord}字第{voucherNo}号 {summary}'"/>
  <xsl:param name="level" select="0"/>
  <xsl:param name="external_key" select="''"/>
  <xsl:param name="embed_attachments" select="true()"/>

  <!-- main-table field names (主表字段) -->
  <xsl:param name="field_voucher_id" select="'pzbh'"/>
  <xsl:param name="field_org" select="'gsdm'"/>
  <xsl:param name="field_period" select="'kjqj'"/>
  <xsl:param name="field_voucher_word" select="'pzz'"/>
  <xsl:param name="field_voucher_no" select="'pzh'"/>
  <xsl:param name="field_date" select="'pzrq'"/>
  <xsl:param name="field_amount" select="'je'"/>
  <xsl:param name="field_preparer" select="'zdr'"/>
  <xsl:param name="field_summary" select="'zy'"/>

  <!-- detail table (明细表) and its field names -->
  <xsl:param name="detail_table" select="'formtable_main_1_dt1'"/>
  <xsl:param name="field_line_no" select="'hh'"/>
  <xsl:param name="field_line_summary" select="'flzy'"/>
  <xsl:param name="field_account_code" select="'kmbm'"/>
  <xsl:param name="field_account_name" select="'kmmc'"/>
  <xsl:param name="field_debit" select="'jfje'"/>
  <xsl:param name="field_credit" select="'dfje'"/>

  <xsl:template match="/v:Voucher">
    <xsl:variable name="amount" select="arc:exact-sum(v:entries/v:entry/v:debit)"/>
    <xsl:variable name="summary">
      <xsl:choose>
        <xsl:when test="normalize-space(v:summary) != ''"><xsl:value-of select="v:summary"/></xsl:when>
        <xsl:otherwise><xsl:value-of select="v:entries/v:entry[1]/v:summary"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>

    <WorkflowRequest>
      <workflowCode><xsl:value-of select="$workflow_code"/></workflowCode>
      <title>
        <xsl:call-template name="fill-pattern">
          <xsl:with-param name="text" select="$title_pattern"/>
          <xsl:with-param name="amount" select="$amount"/>
          <xsl:with-param name="summary" select="$summary"/>
        </xsl:call-template>
      </title>
      <creator><xsl:value-of select="$creator"/></creator>
      <level><xsl:value-of select="$level"/></level>
      <externalKey><xsl:value-of select="$external_key"/></externalKey>
      <mainFields>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_voucher_id"/>
          <xsl:with-param name="value" select="v:voucherId"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_org"/>
          <xsl:with-param name="value" select="v:orgCode"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_period"/>
          <xsl:with-param name="value" select="v:period"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_voucher_word"/>
          <xsl:with-param name="value" select="v:voucherWord"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_voucher_no"/>
          <xsl:with-param name="value" select="v:voucherNo"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_date"/>
          <xsl:with-param name="value" select="v:date"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_amount"/>
          <xsl:with-param name="value" select="$amount"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_preparer"/>
          <xsl:with-param name="value" select="v:preparer"/>
        </xsl:call-template>
        <xsl:call-template name="field">
          <xsl:with-param name="name" select="$field_summary"/>
          <xsl:with-param name="value" select="$summary"/>
        </xsl:call-template>
      </mainFields>
      <detailTables>
        <table name="{$detail_table}">
          <xsl:apply-templates select="v:entries/v:entry"/>
        </table>
      </detailTables>
      <xsl:if test="v:attachments/v:attachment">
        <attachments>
          <xsl:apply-templates select="v:attachments/v:attachment"/>
        </attachments>
      </xsl:if>
      <remark>
        <xsl:value-of select="concat('全宗号 ', v:fondsCode, '; 附件 ', v:attachmentCount, ' 张; 凭证 ', v:voucherId)"/>
      </remark>
    </WorkflowRequest>
  </xsl:template>

  <!-- a Vouchers batch or anything else is not one request: fail loudly -->
  <xsl:template match="/*" priority="-1">
    <xsl:message terminate="yes">voucher-to-workflow expects one v:Voucher as the root element</xsl:message>
  </xsl:template>

  <xsl:template match="v:entry">
    <row>
      <xsl:call-template name="field">
        <xsl:with-param name="name" select="$field_line_no"/>
        <xsl:with-param name="value" select="v:lineNo"/>
      </xsl:call-template>
      <xsl:call-template name="field">
        <xsl:with-param name="name" select="$field_line_summary"/>
        <xsl:with-param name="value" select="v:summary"/>
      </xsl:call-template>
      <xsl:call-template name="field">
        <xsl:with-param name="name" select="$field_account_code"/>
        <xsl:with-param name="value" select="v:accountCode"/>
      </xsl:call-template>
      <xsl:call-template name="field">
        <xsl:with-param name="name" select="$field_account_name"/>
        <xsl:with-param name="value" select="v:accountName"/>
      </xsl:call-template>
      <!-- written in place, not through "field": a tree-fragment parameter costs more -->
      <field>
        <name><xsl:value-of select="$field_debit"/></name>
        <value><xsl:call-template name="money"><xsl:with-param name="value" select="v:debit"/></xsl:call-template></value>
      </field>
      <field>
        <name><xsl:value-of select="$field_credit"/></name>
        <value><xsl:call-template name="money"><xsl:with-param name="value" select="v:credit"/></xsl:call-template></value>
      </field>
    </row>
  </xsl:template>

  <xsl:template match="v:attachment">
    <attachment>
      <name><xsl:value-of select="v:fileName"/></name>
      <mimeType><xsl:value-of select="v:mimeType"/></mimeType>
      <xsl:if test="$embed_attachments and normalize-space(v:content) != ''">
        <content><xsl:value-of select="normalize-space(v:content)"/></content>
      </xsl:if>
    </attachment>
  </xsl:template>

  <xsl:template name="field">
    <xsl:param name="name"/>
    <xsl:param name="value"/>
    <field>
      <name><xsl:value-of select="$name"/></name>
      <value><xsl:value-of select="$value"/></value>
    </field>
  </xsl:template>

  <!--
    An xs:decimal amount of voucher.xsd (optional sign, digits, optional point and fraction,
    blanks around) as the OA's "0.00" text, exactly: no leading zeros, two fraction digits,
    no sign on zero.  It writes what format-number(., '0.00') writes for every amount a double
    holds exactly (tests/test_transforms.py compares them).  Fraction digits past the second
    are cut, not rounded: the schema lets them through only as zeros ("1.500" is valid).
    substring('-', 1, condition) is XPath 1.0 for "a minus sign when the condition holds".
  -->
  <xsl:template name="money">
    <xsl:param name="value"/>
    <xsl:variable name="unsigned" select="translate($value, '+- &#9;&#10;&#13;', '')"/>
    <xsl:variable name="integer" select="substring-before(concat($unsigned, '.'), '.')"/>
    <xsl:variable name="fraction" select="substring(concat(substring-after($unsigned, '.'), '00'), 1, 2)"/>
    <xsl:variable name="nonzero" select="translate($integer, '0', '')"/>
    <xsl:value-of select="concat(substring('-', 1, contains($value, '-') and ($nonzero != '' or $fraction != '00')),
                                 substring('0', 1, $nonzero = ''),
                                 substring($integer, string-length(substring-before($integer, substring($nonzero, 1, 1))) + 1,
                                           string-length($integer) * ($nonzero != '')),
                                 '.', $fraction)"/>
  </xsl:template>

  <!-- Title pattern: replaces {placeholder}s; an unknown one is kept as written. -->
  <xsl:template name="fill-pattern">
    <xsl:param name="text"/>
    <xsl:param name="amount"/>
    <xsl:param name="summary"/>
    <xsl:variable name="rest" select="substring-after($text, '{')"/>
    <xsl:choose>
      <xsl:when test="contains($text, '{') and contains($rest, '}')">
        <xsl:variable name="key" select="substring-before($rest, '}')"/>
        <xsl:value-of select="substring-before($text, '{')"/>
        <xsl:choose>
          <xsl:when test="$key = 'orgName'"><xsl:value-of select="v:orgName"/></xsl:when>
          <xsl:when test="$key = 'orgCode'"><xsl:value-of select="v:orgCode"/></xsl:when>
          <xsl:when test="$key = 'period'"><xsl:value-of select="v:period"/></xsl:when>
          <xsl:when test="$key = 'voucherWord'"><xsl:value-of select="v:voucherWord"/></xsl:when>
          <xsl:when test="$key = 'voucherNo'"><xsl:value-of select="v:voucherNo"/></xsl:when>
          <xsl:when test="$key = 'voucherId'"><xsl:value-of select="v:voucherId"/></xsl:when>
          <xsl:when test="$key = 'summary'"><xsl:value-of select="$summary"/></xsl:when>
          <xsl:when test="$key = 'amount'"><xsl:value-of select="$amount"/></xsl:when>
          <xsl:otherwise><xsl:value-of select="concat('{', $key, '}')"/></xsl:otherwise>
        </xsl:choose>
        <xsl:call-template name="fill-pattern">
          <xsl:with-param name="text" select="substring-after($rest, '}')"/>
          <xsl:with-param name="amount" select="$amount"/>
          <xsl:with-param name="summary" select="$summary"/>
        </xsl:call-template>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$text"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
