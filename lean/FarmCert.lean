import FarmCert.Q
import FarmCert.Model
import FarmCert.Cert
