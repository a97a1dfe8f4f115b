package archiveoa.compat;

import java.util.Collections;
import java.util.Set;
import javax.xml.namespace.QName;
import javax.xml.soap.SOAPElement;
import javax.xml.soap.SOAPEnvelope;
import javax.xml.soap.SOAPException;
import javax.xml.soap.SOAPHeader;
import javax.xml.ws.handler.MessageContext;
import javax.xml.ws.handler.soap.SOAPHandler;
import javax.xml.ws.handler.soap.SOAPMessageContext;

/**
 * Adds a WS-Security UsernameToken (PasswordText) to every outgoing request: the JAX-WS RI
 * alone has no WS-Security (that is Metro's WSIT or CXF), so a handler is how plain JAX-WS
 * clients send it.
 */
final class UsernameTokenHandler implements SOAPHandler<SOAPMessageContext> {
    static final String WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    static final String PASSWORD_TEXT =
            "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";

    private final String user;
    private final String password;

    UsernameTokenHandler(String user, String password) {
        this.user = user;
        this.password = password;
    }

    @Override
    public boolean handleMessage(SOAPMessageContext context) {
        if (!(Boolean) context.get(MessageContext.MESSAGE_OUTBOUND_PROPERTY)) {
            return true;
        }
        try {
            SOAPEnvelope envelope = context.getMessage().getSOAPPart().getEnvelope();
            SOAPHeader header = envelope.getHeader() != null ? envelope.getHeader() : envelope.addHeader();
            SOAPElement security = header.addChildElement("Security", "wsse", WSSE);
            SOAPElement token = security.addChildElement("UsernameToken", "wsse");
            token.addChildElement("Username", "wsse").addTextNode(user);
            SOAPElement secret = token.addChildElement("Password", "wsse");
            secret.setAttribute("Type", PASSWORD_TEXT);
            secret.addTextNode(password);
        } catch (SOAPException e) {
            throw new IllegalStateException("cannot add the UsernameToken header", e);
        }
        return true;
    }

    @Override
    public boolean handleFault(SOAPMessageContext context) {
        return true;
    }

    @Override
    public void close(MessageContext context) {
    }

    @Override
    public Set<QName> getHeaders() {
        return Collections.emptySet();
    }
}
